//! Link libgptq as pkg-config describes it (`pkg-config --libs gptq`), so an
//! installed prefix is picked with PKG_CONFIG_PATH=PREFIX/lib/pkgconfig. Runs the
//! `pkg-config` command itself: no build dependencies.

use std::process::Command;

fn pkg_config(args: &[&str]) -> String {
    let out = Command::new("pkg-config")
        .args(args)
        .arg("gptq")
        .output()
        .unwrap_or_else(|e| panic!("gptq-sys: cannot run pkg-config: {}", e));
    if !out.status.success() {
        panic!(
            "gptq-sys: `pkg-config {} gptq` failed (is libgptq installed, and \
             PKG_CONFIG_PATH set to its lib/pkgconfig?): {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    String::from_utf8(out.stdout).expect("pkg-config printed non-UTF-8").trim().to_string()
}

fn main() {
    println!("cargo:rerun-if-env-changed=PKG_CONFIG_PATH");
    for flag in pkg_config(&["--libs"]).split_whitespace() {
        if let Some(dir) = flag.strip_prefix("-L") {
            println!("cargo:rustc-link-search=native={}", dir);
        } else if let Some(name) = flag.strip_prefix("-l") {
            println!("cargo:rustc-link-lib=dylib={}", name);
        }
    }
    // Dependent crates read these as DEP_GPTQ_INCLUDE and DEP_GPTQ_LIBDIR.
    let cflags = pkg_config(&["--cflags"]);
    for flag in cflags.split_whitespace() {
        if let Some(dir) = flag.strip_prefix("-I") {
            println!("cargo:include={}", dir);
        }
    }
    println!("cargo:libdir={}", pkg_config(&["--variable=libdir"]));
    // For tests/header.rs: the flags to compile the header check with.
    println!("cargo:rustc-env=GPTQ_SYS_CFLAGS={}", cflags);
}
