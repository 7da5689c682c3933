//! A loaded model version: its config (completed and checked against the ONNX graph), the file
//! its instances load, and the session settings they share.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::backend::BackendState;
use crate::config::genai::{self, GenaiConfig};
use crate::config::model_config::ModelConfig;
use crate::config::{autocomplete, check, generator, params};
use crate::error::{Error, Result};
use crate::generate::metrics::GenerationFamilies;
use crate::generate::text::{self, Text};
use crate::handover::Ticket;
use crate::metrics::{ModelMetrics, SharedArenaGauge};
use crate::onnx::runtime::{Runtime, ThreadPools};
use crate::onnx::session::{Device, GraphOptimization, ModelIo, OnnxSession, SessionSettings};
use crate::request_log::ModelLog;
use crate::triton::Model;

pub struct ModelState {
    pub name: String,
    pub version: u64,
    pub config: ModelConfig,
    pub model_path: PathBuf,
    pub settings: SessionSettings,
    pub io: ModelIo,
    pub runtime: Arc<Runtime>,
    /// The outputs runs compute: those the config exposes.
    pub output_names: Vec<String>,
    /// onnxrs's metrics for this model (None when switched off).
    pub metrics: Option<ModelMetrics>,
    /// This incarnation's place among the incarnations of its version (see `handover`).
    pub ticket: Ticket,
    /// `share_session_between_instances`: one session per device for all the instances.
    pub share_session: bool,
    /// `response_timings: "always"`: every response carries its request's timings.
    pub response_timings_always: bool,
    /// The outputs runs of one request write straight into the response (`execute::direct`).
    pub(crate) direct_outputs: Vec<crate::execute::direct::DirectOutput>,
    /// The shared sessions, one per device, made by the first instance on it.
    shared: Mutex<Vec<(Device, Arc<OnnxSession>)>>,
    /// The backend's request log with this model's sampling, when `request-log=PATH` is set.
    pub request_log: Option<ModelLog>,
    /// The shared CPU arena's gauge, when this model's sessions allocate from it.
    pub shared_arena_gauge: Option<Arc<SharedArenaGauge>>,
    /// The backend's held model references (see `hold`).
    pub holds: Arc<crate::hold::Holds>,
    /// A generative model (its version folder has `genai_config.json`): served by `generate`.
    pub generation: Option<Arc<GenaiConfig>>,
    /// A generator's tokenizer (`tokenizer.json` beside its model): text in and out.
    pub text: Option<Arc<Text>>,
    /// The LLM serving metrics' families, with metrics on.
    pub generation_families: Option<Arc<GenerationFamilies>>,
}

/// An instance's session, and whether this instance made it (the one that reports its memory).
pub struct InstanceSession {
    pub session: Arc<OnnxSession>,
    pub made_here: bool,
}

/// `<repository>/<version>/<default_model_filename>`; a directory there (a model saved with
/// external data) holds `model.onnx`.
fn model_file(repository: &Path, version: u64, filename: &str) -> Result<PathBuf> {
    let path = repository.join(version.to_string()).join(filename);
    let path = if path.is_dir() { path.join(crate::config::model_config::DEFAULT_MODEL_FILENAME) } else { path };
    if !path.is_file() {
        return Err(Error::not_found(format!("model file '{}' does not exist", path.display())));
    }
    Ok(path)
}

/// The version's `genai_config.json`, when it has one (then the model is a generator).
fn read_genai(repository: &Path, version: u64) -> Result<Option<Arc<GenaiConfig>>> {
    let path = repository.join(version.to_string()).join(genai::FILE_NAME);
    if !path.is_file() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(&path)
        .map_err(|e| Error::invalid_arg(format!("cannot read '{}': {e}", path.display())))?;
    Ok(Some(Arc::new(GenaiConfig::parse(&text)?)))
}

/// The version's `tokenizer.json`, when it has one.
fn read_tokenizer(repository: &Path, version: u64) -> Result<Option<Arc<Text>>> {
    let path = repository.join(version.to_string()).join(text::FILE_NAME);
    if !path.is_file() {
        return Ok(None);
    }
    Ok(Some(Arc::new(Text::load(&path)?)))
}

/// Reads the graph's inputs and outputs with a session built only for that: no graph
/// optimization, one thread, no arena, so it is quick and gives its memory back at once.
fn read_io(runtime: &Arc<Runtime>, path: &Path) -> Result<ModelIo> {
    let probe = SessionSettings {
        intra_op_threads: 1,
        inter_op_threads: 1,
        mem_arena: false,
        optimization: GraphOptimization::Disabled,
        ..SessionSettings::default()
    };
    Ok(OnnxSession::load(runtime, path, &probe, None)?.io().clone())
}

impl ModelState {
    /// `ticket` names the incarnation (model, version) and its place among that version's.
    pub(crate) fn initialize(model: Model<'_>, backend: &BackendState, ticket: Ticket) -> Result<Self> {
        let (name, version) = (ticket.model().to_string(), ticket.version());
        let context = |e: Error| e.context(format_args!("onnxrs: model '{name}' version {version}"));
        let start = crate::clock::now_ns();
        let state = Self::load(model, backend, ticket).map_err(context)?;
        if let Some(m) = &state.metrics {
            m.set_load_ms(crate::clock::now_ns().saturating_sub(start) as f64 / 1e6);
        }
        Ok(state)
    }

    fn load(model: Model<'_>, backend: &BackendState, ticket: Ticket) -> Result<Self> {
        let (name, version) = (ticket.model(), ticket.version());
        let mut json = model.config()?;
        let first = ModelConfig::parse(&json)?;
        let repository = model.repository()?;
        let model_path = model_file(&repository, version, &first.default_model_filename)?;
        let generation = read_genai(&repository, version)?;
        let text = match &generation {
            Some(_) => read_tokenizer(&repository, version)?,
            None => None,
        };
        let runtime = backend.runtime_with_arena()?;
        let io = read_io(&runtime, &model_path)?;
        let completed = match (model.auto_complete_config()?, &generation) {
            (false, _) => None,
            (true, Some(_)) => generator::complete(&json, text.is_some()),
            (true, None) => autocomplete::complete(&json, &io, backend.default_max_batch_size)?,
        };
        if let Some(completed) = completed {
            model.set_config(&completed)?;
            // The server may add defaults of its own; what it holds now is the config.
            json = model.config()?;
            log::info!("onnxrs: model '{name}': completed the config from the ONNX model");
        }
        let mut config = ModelConfig::parse(&json)?;
        match &generation {
            Some(genai) => generator::check(&json, &config, (genai, text.is_some()), &io)?,
            None => {
                config.add_implicit_inputs()?;
                check::bind_scalars(&mut config, &io);
                check::check_against_graph(&config, &io)?;
            }
        }
        let mut settings = params::session_settings(&config, crate::cpu::available_cpus())?;
        params::apply_shared_arena(&mut settings, &config, backend.shared_arena.is_some())?;
        let unknown = params::unknown_parameters(&config)?;
        if !unknown.is_empty() {
            log::warn!(
                "onnxrs: model '{name}' version {version}: parameters onnxrs does not know, ignored: {}",
                unknown.join(", ")
            );
        }
        let shared_arena = crate::onnx::arena::uses_shared(&runtime, &settings);
        if shared_arena {
            log::info!("onnxrs: model '{name}' version {version}: sessions allocate from the shared CPU arena");
        }
        if let Some((_, devices)) = settings.run_config_entries.iter().find(|(k, _)| k == params::ARENA_SHRINKAGE) {
            log::info!("onnxrs: model '{name}' version {version}: arena shrinkage after every run on {devices}");
        }
        let share_session = params::share_session(&config)?;
        let response_timings_always = crate::response_timings::always(&config.parameters)?;
        let threads = match runtime.thread_pools {
            ThreadPools::Shared { threads, .. } if !settings.own_threads => format!("shared pool of {threads}"),
            _ => format!("intra_op {} inter_op {}", settings.intra_op_threads, settings.inter_op_threads),
        };
        log::info!(
            "onnxrs: model '{name}' version {version}: {} | max_batch_size {} | threads: {threads} | {} | optimization {:?} | arena {} mem_pattern {}{}",
            model_path.display(),
            config.max_batch_size,
            if settings.parallel_execution { "parallel" } else { "sequential" },
            settings.optimization,
            settings.mem_arena,
            settings.mem_pattern,
            if share_session { " | one session shared by the instances" } else { "" },
        );
        // The outputs runs compute: the config's, and the state outputs handed back to Triton.
        let mut output_names: Vec<String> = config.outputs.iter().map(|o| o.name.clone()).collect();
        for state in &config.sequence.states {
            if !output_names.contains(&state.output_name) {
                output_names.push(state.output_name.clone());
            }
        }
        // A generator's runs compute the decoder's logits and caches, not the model's outputs.
        if let Some(genai) = &generation {
            output_names = generator::output_names(genai);
            let limits = generator::limits(&config)?;
            log::info!(
                "onnxrs: model '{name}' version {version}: generates with {} layers, {} KV heads of {}, context {}; \
                 at most {} sequences per instance, KV cache {}",
                genai.num_layers,
                genai.num_kv_heads,
                genai.head_size,
                genai.context_length,
                limits.max_sequences,
                if limits.kv_cache_bytes == 0 {
                    "unbounded".to_string()
                } else {
                    format!("{} bytes", limits.kv_cache_bytes)
                }
            );
        }
        let metrics = match (&backend.metrics, params::metrics_enabled(&config)?) {
            (Some(families), true) => {
                Some(ModelMetrics::new(families.clone(), name, version, config.sequence_batching)?)
            }
            _ => None,
        };
        let direct_outputs =
            if generation.is_some() { Vec::new() } else { crate::execute::direct::eligible(&config, &io) };
        // Checked even when the log is off: a bad value is a config error either way.
        let log_sample = params::request_log_sample(&config)?;
        let request_log = backend.request_log.as_ref().map(|log| ModelLog::new(log, log_sample));
        Ok(ModelState {
            name: name.to_string(),
            version,
            config,
            model_path,
            settings,
            io,
            runtime,
            output_names,
            metrics,
            ticket,
            share_session,
            response_timings_always,
            direct_outputs,
            shared: Mutex::new(Vec::new()),
            request_log,
            shared_arena_gauge: backend.shared_arena_gauge.clone().filter(|_| shared_arena),
            holds: Arc::clone(&backend.holds),
            generation,
            text,
            generation_families: backend.generation_families.clone(),
        })
    }

    /// The session an instance on `settings.device` runs: its own, or with
    /// `share_session_between_instances` the one the first instance on that device made.
    pub(crate) fn instance_session(&self, settings: &SessionSettings) -> Result<InstanceSession> {
        let load = || OnnxSession::load(&self.runtime, &self.model_path, settings, Some(&self.output_names));
        if !self.share_session {
            return Ok(InstanceSession { session: Arc::new(load()?), made_here: true });
        }
        // Held while loading: instances load in parallel, and the second must wait for the
        // first's session rather than make one of its own.
        let mut shared = self.shared.lock().map_err(|_| Error::internal("the shared sessions' lock is poisoned"))?;
        if let Some((_, session)) = shared.iter().find(|(device, _)| *device == settings.device) {
            return Ok(InstanceSession { session: Arc::clone(session), made_here: false });
        }
        let session = Arc::new(load()?);
        shared.push((settings.device.clone(), Arc::clone(&session)));
        Ok(InstanceSession { session, made_here: true })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_file_resolution() {
        let root = std::env::temp_dir().join(format!("onnxrs-modelfile-{}", std::process::id()));
        std::fs::create_dir_all(root.join("1")).unwrap();
        std::fs::create_dir_all(root.join("2/model.onnx")).unwrap();
        std::fs::write(root.join("1/model.onnx"), b"x").unwrap();
        std::fs::write(root.join("2/model.onnx/model.onnx"), b"x").unwrap();
        assert_eq!(model_file(&root, 1, "model.onnx").unwrap(), root.join("1/model.onnx"));
        assert_eq!(model_file(&root, 2, "model.onnx").unwrap(), root.join("2/model.onnx/model.onnx"));
        let e = model_file(&root, 3, "model.onnx").unwrap_err();
        assert!(e.message().contains("3/model.onnx' does not exist"), "{e}");
        std::fs::remove_dir_all(&root).unwrap();
    }
}
