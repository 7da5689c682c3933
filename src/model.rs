//! A loaded model version: its config (completed and checked against the ONNX graph), the file
//! its instances load, and the session settings they share.

use std::path::{Path, PathBuf};

use crate::backend::BackendState;
use crate::config::model_config::ModelConfig;
use crate::config::{autocomplete, check, params};
use crate::error::{Error, Result};
use crate::handover::Ticket;
use crate::metrics::ModelMetrics;
use crate::onnx::runtime::Runtime;
use crate::onnx::session::{GraphOptimization, ModelIo, OnnxSession, SessionSettings};
use crate::request_log::ModelLog;
use crate::triton::Model;

pub struct ModelState {
    pub name: String,
    pub version: u64,
    pub config: ModelConfig,
    pub model_path: PathBuf,
    pub settings: SessionSettings,
    pub io: ModelIo,
    pub runtime: &'static Runtime,
    /// The outputs runs compute: those the config exposes.
    pub output_names: Vec<String>,
    /// onnxrs's metrics for this model (None when switched off).
    pub metrics: Option<ModelMetrics>,
    /// This incarnation's place among the incarnations of its version (see `handover`).
    pub ticket: Ticket,
    /// The backend's request log with this model's sampling, when `request-log=PATH` is set.
    pub request_log: Option<ModelLog>,
}

/// `<repository>/<version>/<default_model_filename>`; a directory there (a model saved with
/// external data) holds `model.onnx`.
fn model_file(repository: &Path, version: u64, filename: &str) -> Result<PathBuf> {
    let path = repository.join(version.to_string()).join(filename);
    let path = if path.is_dir() { path.join("model.onnx") } else { path };
    if !path.is_file() {
        return Err(Error::not_found(format!("model file '{}' does not exist", path.display())));
    }
    Ok(path)
}

/// Reads the graph's inputs and outputs with a session built only for that: no graph
/// optimization, one thread, no arena, so it is quick and gives its memory back at once.
fn read_io(runtime: &Runtime, path: &Path) -> Result<ModelIo> {
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
        let model_path = model_file(&model.repository()?, version, &first.default_model_filename)?;
        let runtime = backend.runtime()?;
        let io = read_io(runtime, &model_path)?;
        let completed = if model.auto_complete_config()? {
            autocomplete::complete(&json, &io, backend.default_max_batch_size)?
        } else {
            None
        };
        if let Some(completed) = completed {
            model.set_config(&completed)?;
            // The server may add defaults of its own; what it holds now is the config.
            json = model.config()?;
            log::info!("onnxrs: model '{name}': completed the config from the ONNX model");
        }
        let mut config = ModelConfig::parse(&json)?;
        config.add_implicit_inputs()?;
        check::bind_scalars(&mut config, &io);
        check::check_against_graph(&config, &io)?;
        let settings = params::session_settings(&config, crate::cpu::available_cpus())?;
        let unknown = params::unknown_parameters(&config)?;
        if !unknown.is_empty() {
            log::warn!(
                "onnxrs: model '{name}' version {version}: parameters onnxrs does not know, ignored: {}",
                unknown.join(", ")
            );
        }
        if let Some((_, devices)) = settings.run_config_entries.iter().find(|(k, _)| k == params::ARENA_SHRINKAGE) {
            log::info!("onnxrs: model '{name}' version {version}: arena shrinkage after every run on {devices}");
        }
        log::info!(
            "onnxrs: model '{name}' version {version}: {} | max_batch_size {} | intra_op {} inter_op {} | {} | optimization {:?} | arena {} mem_pattern {}",
            model_path.display(),
            config.max_batch_size,
            settings.intra_op_threads,
            settings.inter_op_threads,
            if settings.parallel_execution { "parallel" } else { "sequential" },
            settings.optimization,
            settings.mem_arena,
            settings.mem_pattern,
        );
        // The outputs runs compute: the config's, and the state outputs handed back to Triton.
        let mut output_names: Vec<String> = config.outputs.iter().map(|o| o.name.clone()).collect();
        for state in &config.sequence.states {
            if !output_names.contains(&state.output_name) {
                output_names.push(state.output_name.clone());
            }
        }
        let metrics = match (&backend.metrics, params::metrics_enabled(&config)?) {
            (Some(families), true) => {
                Some(ModelMetrics::new(families.clone(), name, version, config.sequence_batching)?)
            }
            _ => None,
        };
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
            request_log,
        })
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
