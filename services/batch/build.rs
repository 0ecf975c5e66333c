//! Builds the shipped plugins (`plugins/*.c`) to WebAssembly with clang, and writes
//! `shipped.rs`, the table `plugin::SHIPPED` includes: the list below is the only one.
//! Word count is also built for this machine (`native_wordcount`, with `-DBATCH_NATIVE`), the
//! benchmark's WebAssembly-against-native figure.
//! Needs clang and lld (wasm-ld); on Debian or Ubuntu: `sudo apt-get install clang lld`.

use std::path::PathBuf;
use std::process::Command;

const PLUGINS: &[&str] = &["wordcount", "indexer", "grep", "sort", "join", "chaos"];

fn main() {
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let clang = std::env::var("BATCH_CLANG").unwrap_or_else(|_| "clang".to_string());
    println!("cargo:rerun-if-changed=plugins");
    println!("cargo:rerun-if-env-changed=BATCH_CLANG");
    let mut table = String::from("&[\n");
    for plugin in PLUGINS {
        table += &format!(
            "    ({plugin:?}, include_bytes!(concat!(env!(\"OUT_DIR\"), \"/{plugin}.wasm\"))),\n"
        );
    }
    table += "]\n";
    std::fs::write(out.join("shipped.rs"), table).expect("writing shipped.rs");
    for plugin in PLUGINS {
        let source = format!("plugins/{plugin}.c");
        let wasm = out.join(format!("{plugin}.wasm"));
        let result = Command::new(&clang)
            .args([
                "--target=wasm32",
                "-O2",
                "-nostdlib",
                "-ffreestanding",
                "-Wall",
                "-Wextra",
                "-Werror",
                "-Wl,--no-entry",
                "-Wl,--strip-all",
                "-o",
            ])
            .arg(&wasm)
            .arg(&source)
            .output();
        match result {
            Ok(done) if done.status.success() => {}
            Ok(done) => panic!(
                "building {source} to WebAssembly failed:\n{}",
                String::from_utf8_lossy(&done.stderr)
            ),
            Err(e) => panic!(
                "building the batch plugins needs clang with the wasm32 target and lld ({clang}: {e}); \
                 on Debian or Ubuntu: sudo apt-get install clang lld"
            ),
        }
    }
    native_wordcount(&clang);
}

/// Builds `plugins/wordcount.c` for the host, its entry points and `emit` renamed so they
/// cannot clash with anything else in the program (`src/native.rs` calls them).
fn native_wordcount(clang: &str) {
    cc::Build::new()
        .compiler(clang)
        .file("plugins/wordcount.c")
        .define("BATCH_NATIVE", None)
        .define("map", "wordcount_native_map")
        .define("reduce", "wordcount_native_reduce")
        .define("combine", "wordcount_native_combine")
        .define("emit", "batch_native_emit")
        .define("random_u32", "batch_native_random_u32")
        .opt_level(2)
        .warnings_into_errors(true)
        .compile("wordcount_native");
}
