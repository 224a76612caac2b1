//! The declarations of src/lib.rs checked by the C compiler against the installed
//! headers. Every `pub fn` of the `extern "C"` block becomes a C function pointer of
//! the type the Rust declaration claims, initialised with the real function; every
//! struct becomes `offsetof`/`sizeof` assertions from the Rust layout, and every
//! `pub const` an assertion of its value. Compiled with `-Werror`, so a wrong parameter
//! type, a missing `const`, a moved field, a wrong size or a wrong constant fails this
//! test.

use gptq_sys::*;
use std::mem::{size_of, MaybeUninit};
use std::path::Path;
use std::process::Command;

/// The C spelling of a Rust FFI type, east-const: `*const c_char` -> `char const *`.
fn c_type(rust: &str) -> String {
    let t = rust.trim();
    if let Some(inner) = t.strip_prefix("*const ") {
        return format!("{} const *", c_type(inner));
    }
    if let Some(inner) = t.strip_prefix("*mut ") {
        return format!("{} *", c_type(inner));
    }
    let base = match t {
        "i32" => "int32_t",
        "u32" => "uint32_t",
        "i64" => "int64_t",
        "u64" => "uint64_t",
        "u16" => "uint16_t",
        "f32" => "float",
        "f64" => "double",
        "usize" => "size_t",
        "c_int" => "int",
        "c_char" => "char",
        "c_void" => "void",
        other if other.starts_with("gptq_") => other,
        other => panic!("no C spelling for the Rust type `{}`", other),
    };
    base.to_string()
}

/// (name, C return type, C parameter types) of every `pub fn` in the extern block.
fn declarations(src: &str) -> Vec<(String, String, Vec<String>)> {
    let start = src.find("extern \"C\" {").expect("no extern \"C\" block");
    let block = &src[start..];
    let mut out = Vec::new();
    for decl in block.split("pub fn ").skip(1) {
        let decl = &decl[..decl.find(';').expect("declaration without ';'")];
        let open = decl.find('(').unwrap();
        let close = decl.rfind(')').unwrap();
        let name = decl[..open].trim().to_string();
        let params: Vec<String> = decl[open + 1..close]
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(|p| c_type(p.split_once(':').expect("parameter without a name").1))
            .collect();
        let ret = match decl[close + 1..].trim().strip_prefix("->") {
            Some(r) => c_type(r),
            None => "void".to_string(),
        };
        out.push((name, ret, params));
    }
    out
}

/// `_Static_assert`s for one struct: each field's offset, and the size (equal, or at
/// most the C size for structs versioned by struct_size, whose fields are only
/// appended).
macro_rules! layout {
    ($out:ident, $ty:ident { $($field:ident),* $(,)? }) => {{
        let probe = MaybeUninit::<$ty>::uninit();
        let base = probe.as_ptr() as usize;
        let names = [$(stringify!($field)),*];
        $(
            // SAFETY: only the address of the field is taken; nothing is read.
            let at = unsafe { std::ptr::addr_of!((*probe.as_ptr()).$field) } as usize - base;
            $out.push_str(&format!(
                "_Static_assert(offsetof({0}, {1}) == {2}, \"{0}.{1}: offset\");\n",
                stringify!($ty), stringify!($field), at));
        )*
        let op = if names[0] == "struct_size" { "<=" } else { "==" };
        $out.push_str(&format!("_Static_assert({} {} sizeof({}), \"{}: size\");\n",
                               size_of::<$ty>(), op, stringify!($ty), stringify!($ty)));
    }};
}

fn check_source() -> String {
    let src = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/lib.rs"))
        .expect("read src/lib.rs");
    let mut c = String::from("#include <stddef.h>\n#include <gptq/gptq.h>\n#include <gptq/model.h>\n\n");
    layout!(c, gptq_ctx_options { struct_size, backend, threads, device, log, log_user, log_level,
                                      math });
    layout!(c, gptq_config { struct_size, bits, group_size, sym, desc_act, static_groups,
                             block_size, rtn, damp_percent, damp_auto_increment, inverse });
    layout!(c, gptq_unpacked { bits, group_size, out_features, in_features, ngroups, codes,
                               scales, zeros, g_idx, q });
    layout!(c, gptq_packed { bits, format, out_features, in_features, ngroups, qweight,
                             qzeros, scales, g_idx });
    layout!(c, gptq_progress { struct_size, layer, num_layers, module, step, num_steps, loss,
                               damp_percent, seconds, elapsed });
    layout!(c, gptq_quantize_options { struct_size, config, nsamples, seqlen, seed,
                                       true_sequential, progress, progress_user });
    layout!(c, gptq_save_options { struct_size, format, pack_mode, max_shard_bytes, force });
    layout!(c, gptq_eval_result { struct_size, nll, ppl, tokens, windows, seconds });
    for line in src.lines() {
        // pub const GPTQ_X: T = V;
        if let Some(rest) = line.trim().strip_prefix("pub const ") {
            let (name, value) = rest.split_once(':').expect("const without a type");
            let value = value.split_once('=').expect("const without a value").1;
            let value = value.trim().trim_end_matches(';');
            c.push_str(&format!("_Static_assert({} == {}, \"{}\");\n", name.trim(), value, name.trim()));
        }
    }
    c.push('\n');
    for (name, ret, params) in declarations(&src) {
        let params = if params.is_empty() { "void".to_string() } else { params.join(", ") };
        c.push_str(&format!("{} (*const check_{})({}) = {};\n", ret, name, params, name));
    }
    c
}

#[test]
fn declarations_match_the_installed_headers() {
    let source = check_source();
    let nfns = source.matches("(*const check_").count();
    assert!(nfns > 60, "only {} declarations found", nfns);

    let dir = std::env::temp_dir().join(format!("gptq-sys-header-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("check.c");
    std::fs::write(&file, &source).unwrap();
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".to_string());
    let out = Command::new(&cc)
        .args(["-std=c11", "-Wall", "-Werror", "-c"])
        .arg(&file)
        .arg("-o")
        .arg(dir.join("check.o"))
        .args(env!("GPTQ_SYS_CFLAGS").split_whitespace())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {}", cc, e));
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        out.status.success(),
        "the Rust declarations disagree with the headers:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn status_constants_are_the_libraries() {
    // Status codes are pinned; the strings prove the library knows each one.
    for code in [GPTQ_ERR_INVALID_ARGUMENT, GPTQ_ERR_SHAPE, GPTQ_ERR_NOT_FOUND] {
        let s = unsafe { std::ffi::CStr::from_ptr(gptq_strerror(code)) };
        assert_ne!(s.to_str().unwrap(), "unknown status");
    }
    assert_eq!(unsafe { gptq_version_number() } / 10000, 0);
}
