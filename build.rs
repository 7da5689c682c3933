//! Generates the Rust bindings for our declaration of the Triton C API (include/triton_api.h) and
//! limits what libtriton_onnxrs.so exports to the TRITONBACKEND_* entry points.
// A build script that cannot do its job should stop the build with the reason: expect is right here.
#![allow(clippy::expect_used)]

use std::env;
use std::fs;
use std::path::PathBuf;

/// The entry points we implement; they are declared in the header for reference but defined in Rust,
/// so bindgen must not emit `extern` declarations for them.
const OUR_ENTRY_POINTS: &str = "TRITONBACKEND_(Initialize|Finalize|GetBackendAttribute|ModelInitialize|ModelFinalize|ModelInstanceInitialize|ModelInstanceFinalize|ModelInstanceExecute)";

fn main() {
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    println!("cargo:rerun-if-changed=include/triton_api.h");
    println!("cargo:rerun-if-changed=build.rs");

    let bindings = bindgen::Builder::default()
        .header("include/triton_api.h")
        .allowlist_function("TRITON(SERVER|BACKEND)_.*")
        .allowlist_type("TRITON(SERVER|BACKEND)_.*")
        .allowlist_var("ONNXRS_.*")
        .blocklist_function(OUR_ENTRY_POINTS)
        .default_enum_style(bindgen::EnumVariation::NewType { is_bitfield: false, is_global: false })
        .prepend_enum_name(false)
        .wrap_unsafe_ops(true)
        .layout_tests(false)
        .generate_comments(false)
        .rust_edition(bindgen::RustEdition::Edition2024)
        .parse_callbacks(Box::new(bindgen::CargoCallbacks::new()))
        .generate()
        .expect("bindgen failed on include/triton_api.h");
    bindings.write_to_file(out.join("triton_bindings.rs")).expect("cannot write the generated bindings");

    // Export only the TRITONBACKEND_* entry points: everything else (ort, libloading, std) stays
    // local, so two backends built with different versions of those crates never collide.
    let map = out.join("exports.map");
    fs::write(&map, "{\n  global: TRITONBACKEND_*;\n  local: *;\n};\n").expect("cannot write exports.map");
    // The host-fault test plays the server: the .so it loads resolves the server's functions
    // against the test executable, which must therefore export them. Exactly those (the `extern`
    // declarations of our header): exporting more, our own entry points included, would keep the
    // library's Triton calls alive in the other test binaries, which have no server to resolve them.
    let header = fs::read_to_string("include/triton_api.h").expect("cannot read include/triton_api.h");
    // `extern <type> NAME(`: the identifier right before the parenthesis.
    let host_fns: Vec<String> = header
        .lines()
        .filter(|l| l.starts_with("extern "))
        .filter_map(|l| l.split('(').next()?.split(|c: char| !(c.is_alphanumeric() || c == '_')).next_back())
        .filter(|name| name.starts_with("TRITON"))
        .map(str::to_string)
        .collect();
    let list = out.join("host-functions.list");
    fs::write(
        &list,
        format!("{{\n{}\n}};\n", host_fns.iter().map(|f| format!("  {f};")).collect::<Vec<_>>().join("\n")),
    )
    .expect("cannot write host-functions.list");
    println!("cargo:rustc-link-arg-tests=-Wl,--dynamic-list={}", list.display());
    // The library's own unit-test binary has no server either, yet some tests drop values whose
    // destructors call the server (a metric family, an error): it links against stand-ins that
    // abort if ever called. Only `#[cfg(test)]` code includes them.
    let stubs: String = host_fns
        .iter()
        .map(|f| format!("#[unsafe(no_mangle)]\npub extern \"C\" fn {f}() {{\n    std::process::abort()\n}}\n"))
        .collect();
    fs::write(out.join("test_stubs.rs"), stubs).expect("cannot write test_stubs.rs");
    println!("cargo:rustc-cdylib-link-arg=-Wl,--version-script={}", map.display());
}
