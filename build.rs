//! Build script: two linker options for release builds of the binary, nothing
//! else.
//!
//! The release profile keeps line tables (`debug = "line-tables-only"`), so
//! that a panic's backtrace gives every frame, inlined ones too, with its
//! source line; here they are compressed in the binary (zlib: `SHF_COMPRESSED`
//! sections, which std's backtrace, gdb and addr2line read), which takes the
//! binary from 58 MB to under 20 MB (docs/RELEASING.md has the figures);
//! `-O2` (lld's optimisation level: string tail merging among others) takes
//! another 0.77 MB off; GNU ld, for the cross builds, accepts it too. A profile cannot pass
//! linker options, hence this script. It applies to this
//! package's binaries only (not to tests, benches or the tools), on Linux
//! only (GNU ld, gold and lld know the option), and only to profiles that
//! inherit from `release` and keep debug info.
fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let var = |name: &str| std::env::var(name).unwrap_or_default();
    let release = var("PROFILE") == "release";
    let linux = var("CARGO_CFG_TARGET_OS") == "linux";
    let debuginfo = var("DEBUG") != "false" && !var("DEBUG").is_empty();
    if release && linux && debuginfo {
        println!("cargo:rustc-link-arg-bins=-Wl,--compress-debug-sections=zlib");
        println!("cargo:rustc-link-arg-bins=-Wl,-O2");
    }
}
