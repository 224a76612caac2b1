//! Raw declarations of the C API of libgptq: `<gptq/gptq.h>` and `<gptq/model.h>`.
//!
//! Written by hand, one declaration per C function, in the order of the headers.
//! `tests/header.rs` turns every `pub fn` below into a C function pointer of the type
//! this file claims, every struct layout into `offsetof`/`sizeof` assertions and every
//! `pub const` into an assertion of its value, and compiles them against the installed
//! headers with warnings as errors: a declaration that drifts from the header fails
//! `cargo test`.
//!
//! Everything here is `unsafe`; the `gptq` crate is the safe interface.
#![allow(non_camel_case_types)]

use std::os::raw::{c_char, c_int, c_void};

// ---- gptq.h: status codes -----------------------------------------------------------

pub const GPTQ_OK: c_int = 0;
pub const GPTQ_ERR_INVALID_ARGUMENT: c_int = -1;
pub const GPTQ_ERR_OUT_OF_MEMORY: c_int = -2;
pub const GPTQ_ERR_NOT_SUPPORTED: c_int = -3;
pub const GPTQ_ERR_NOT_POSITIVE_DEFINITE: c_int = -4;
pub const GPTQ_ERR_NUMERIC: c_int = -5;
pub const GPTQ_ERR_IO: c_int = -6;
pub const GPTQ_ERR_MALFORMED: c_int = -7;
pub const GPTQ_ERR_SHAPE: c_int = -8;
pub const GPTQ_ERR_DEVICE: c_int = -9;
pub const GPTQ_ERR_CANCELLED: c_int = -10;
pub const GPTQ_ERR_INTERNAL: c_int = -11;
pub const GPTQ_ERR_NOT_FOUND: c_int = -12;

// ---- gptq.h: constants --------------------------------------------------------------

pub const GPTQ_BACKEND_AUTO: i32 = 0;
pub const GPTQ_BACKEND_CPU: i32 = 1;
pub const GPTQ_BACKEND_CUDA: i32 = 2;

pub const GPTQ_MATH_FP32: i32 = 0;
pub const GPTQ_MATH_TF32: i32 = 1;

pub const GPTQ_LOG_ERROR: i32 = 0;
pub const GPTQ_LOG_WARN: i32 = 1;
pub const GPTQ_LOG_INFO: i32 = 2;
pub const GPTQ_LOG_DEBUG: i32 = 3;

pub const GPTQ_INVERSE_FAST: i32 = 0;
pub const GPTQ_INVERSE_REFERENCE: i32 = 1;

pub const GPTQ_FORMAT_V1: i32 = 1;
pub const GPTQ_FORMAT_V2: i32 = 2;

pub const GPTQ_PACK_CLEAN: i32 = 0;
pub const GPTQ_PACK_AUTOGPTQ: i32 = 1;
pub const GPTQ_PACK_GPTQMODEL: i32 = 2;

// model.h
pub const GPTQ_TOKENS_AUTO: i32 = 0;
pub const GPTQ_TOKENS_BYTES: i32 = 1;
pub const GPTQ_TOKENS_IDS: i32 = 2;

// ---- opaque handles -----------------------------------------------------------------

/// `gptq_ctx`: backend, threads, logging, last error.
#[repr(C)]
pub struct gptq_ctx {
    _private: [u8; 0],
}
/// `gptq_hessian`: the Hessian accumulator.
#[repr(C)]
pub struct gptq_hessian {
    _private: [u8; 0],
}
/// `gptq_result`: a quantized layer.
#[repr(C)]
pub struct gptq_result {
    _private: [u8; 0],
}
/// `gptq_tokens`: token sequences.
#[repr(C)]
pub struct gptq_tokens {
    _private: [u8; 0],
}
/// `gptq_model`: a model directory.
#[repr(C)]
pub struct gptq_model {
    _private: [u8; 0],
}

// ---- structs ------------------------------------------------------------------------

pub type gptq_log_fn = Option<unsafe extern "C" fn(user: *mut c_void, level: i32, msg: *const c_char)>;

#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct gptq_ctx_options {
    pub struct_size: u32,
    pub backend: i32,
    pub threads: i32,
    pub device: i32,
    pub log: gptq_log_fn,
    pub log_user: *mut c_void,
    pub log_level: i32,
    pub math: i32,
}

#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct gptq_config {
    pub struct_size: u32,
    pub bits: i32,
    pub group_size: i32,
    pub sym: i32,
    pub desc_act: i32,
    pub static_groups: i32,
    pub block_size: i32,
    pub rtn: i32,
    pub damp_percent: f64,
    pub damp_auto_increment: f64,
    pub inverse: i32,
}

#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct gptq_unpacked {
    pub bits: i32,
    pub group_size: i32,
    pub out_features: i64,
    pub in_features: i64,
    pub ngroups: i64,
    pub codes: *mut i32,
    pub scales: *mut f32,
    pub zeros: *mut i32,
    pub g_idx: *mut i32,
    pub q: *mut f32,
}

#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct gptq_packed {
    pub bits: i32,
    pub format: i32,
    pub out_features: i64,
    pub in_features: i64,
    pub ngroups: i64,
    pub qweight: *mut i32,
    pub qzeros: *mut i32,
    pub scales: *mut u16,
    pub g_idx: *mut i32,
}

// model.h

#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct gptq_progress {
    pub struct_size: u32,
    pub layer: i32,
    pub num_layers: i32,
    pub module: *const c_char,
    pub step: i32,
    pub num_steps: i32,
    pub loss: f64,
    pub damp_percent: f64,
    pub seconds: f64,
    pub elapsed: f64,
}

pub type gptq_progress_fn = Option<unsafe extern "C" fn(user: *mut c_void, p: *const gptq_progress) -> c_int>;

#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct gptq_quantize_options {
    pub struct_size: u32,
    pub config: gptq_config,
    pub nsamples: i64,
    pub seqlen: i64,
    pub seed: u64,
    pub true_sequential: i32,
    pub progress: gptq_progress_fn,
    pub progress_user: *mut c_void,
}

#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct gptq_save_options {
    pub struct_size: u32,
    pub format: i32,
    pub pack_mode: i32,
    pub max_shard_bytes: i64,
    pub force: i32,
}

#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct gptq_eval_result {
    pub struct_size: u32,
    pub nll: f64,
    pub ppl: f64,
    pub tokens: i64,
    pub windows: i64,
    pub seconds: f64,
}

// ---- functions ----------------------------------------------------------------------

extern "C" {
    // gptq.h: version and status
    pub fn gptq_version() -> *const c_char;
    pub fn gptq_version_number() -> u32;
    pub fn gptq_status_str(status: c_int) -> *const c_char;
    pub fn gptq_strerror(status: c_int) -> *const c_char;

    // context
    pub fn gptq_ctx_options_init(opts: *mut gptq_ctx_options);
    pub fn gptq_ctx_create(opts: *const gptq_ctx_options, out: *mut *mut gptq_ctx, errbuf: *mut c_char, errbuf_size: usize) -> c_int;
    pub fn gptq_ctx_free(ctx: *mut gptq_ctx);
    pub fn gptq_ctx_last_error(ctx: *const gptq_ctx) -> *const c_char;
    pub fn gptq_ctx_last_status(ctx: *const gptq_ctx) -> c_int;
    pub fn gptq_ctx_backend(ctx: *const gptq_ctx) -> i32;
    pub fn gptq_backend_name(backend: i32) -> *const c_char;
    pub fn gptq_backend_available(backend: i32, why: *mut c_char, why_size: usize) -> c_int;

    // Hessian
    pub fn gptq_hessian_create(ctx: *mut gptq_ctx, in_features: i64, out: *mut *mut gptq_hessian) -> c_int;
    pub fn gptq_hessian_create_from(ctx: *mut gptq_ctx, in_features: i64, h: *const f32, nsamples: i64, out: *mut *mut gptq_hessian) -> c_int;
    pub fn gptq_hessian_free(h: *mut gptq_hessian);
    pub fn gptq_hessian_add(ctx: *mut gptq_ctx, h: *mut gptq_hessian, x: *const f32, nsamples: i64, seqlen: i64) -> c_int;
    pub fn gptq_hessian_merge(ctx: *mut gptq_ctx, dst: *mut gptq_hessian, src: *const gptq_hessian) -> c_int;
    pub fn gptq_hessian_in_features(h: *const gptq_hessian) -> i64;
    pub fn gptq_hessian_nsamples(h: *const gptq_hessian) -> i64;
    pub fn gptq_hessian_read(ctx: *mut gptq_ctx, h: *const gptq_hessian, dst: *mut f32, count: usize) -> c_int;

    // configuration
    pub fn gptq_config_init(cfg: *mut gptq_config);
    pub fn gptq_config_validate(ctx: *mut gptq_ctx, cfg: *const gptq_config) -> c_int;
    pub fn gptq_num_groups(in_features: i64, group_size: i32) -> i64;

    // layer quantization
    pub fn gptq_layer_quantize(ctx: *mut gptq_ctx, w: *const f32, out_features: i64, in_features: i64, hessian: *const gptq_hessian, cfg: *const gptq_config, out: *mut *mut gptq_result) -> c_int;
    pub fn gptq_result_free(r: *mut gptq_result);
    pub fn gptq_result_out_features(r: *const gptq_result) -> i64;
    pub fn gptq_result_in_features(r: *const gptq_result) -> i64;
    pub fn gptq_result_ngroups(r: *const gptq_result) -> i64;
    pub fn gptq_result_config(r: *const gptq_result, cfg: *mut gptq_config) -> c_int;
    pub fn gptq_result_codes(r: *const gptq_result) -> *const i32;
    pub fn gptq_result_scales(r: *const gptq_result) -> *const f32;
    pub fn gptq_result_zeros(r: *const gptq_result) -> *const i32;
    pub fn gptq_result_g_idx(r: *const gptq_result) -> *const i32;
    pub fn gptq_result_perm(r: *const gptq_result) -> *const i32;
    pub fn gptq_result_q(r: *const gptq_result) -> *const f32;
    pub fn gptq_result_loss(r: *const gptq_result) -> f64;
    pub fn gptq_result_damp_percent(r: *const gptq_result) -> f64;
    pub fn gptq_result_damp(r: *const gptq_result) -> f64;
    pub fn gptq_result_dead_columns(r: *const gptq_result) -> i64;

    // packing
    pub fn gptq_packed_shape(bits: i32, out_features: i64, in_features: i64, ngroups: i64, qweight_shape: *mut i64, qzeros_shape: *mut i64) -> c_int;
    pub fn gptq_pack(ctx: *mut gptq_ctx, src: *const gptq_unpacked, mode: i32, dst: *mut gptq_packed) -> c_int;
    pub fn gptq_pack_result(ctx: *mut gptq_ctx, r: *const gptq_result, mode: i32, dst: *mut gptq_packed) -> c_int;
    pub fn gptq_unpack(ctx: *mut gptq_ctx, src: *const gptq_packed, mode: i32, dst: *mut gptq_unpacked) -> c_int;
    pub fn gptq_dequant_matmul(ctx: *mut gptq_ctx, w: *const gptq_packed, x: *const f32, batch: i64, bias: *const f32, y: *mut f32) -> c_int;

    // float16
    pub fn gptq_fp32_to_fp16(f: f32) -> u16;
    pub fn gptq_fp16_to_fp32(h: u16) -> f32;

    // model.h: tokens
    pub fn gptq_tokens_load(ctx: *mut gptq_ctx, path: *const c_char, kind: i32, out: *mut *mut gptq_tokens) -> c_int;
    pub fn gptq_tokens_from_ids(ctx: *mut gptq_ctx, ids: *const i32, n: i64, out: *mut *mut gptq_tokens) -> c_int;
    pub fn gptq_tokens_free(t: *mut gptq_tokens);
    pub fn gptq_tokens_count(t: *const gptq_tokens) -> i64;
    pub fn gptq_tokens_sequence(t: *const gptq_tokens, i: i64, len: *mut i64) -> *const i32;
    pub fn gptq_tokens_total(t: *const gptq_tokens) -> i64;

    // model.h: models
    pub fn gptq_model_open(ctx: *mut gptq_ctx, dir: *const c_char, out: *mut *mut gptq_model) -> c_int;
    pub fn gptq_model_free(m: *mut gptq_model);
    pub fn gptq_model_architecture(m: *const gptq_model) -> *const c_char;
    pub fn gptq_model_num_layers(m: *const gptq_model) -> i64;
    pub fn gptq_model_hidden_size(m: *const gptq_model) -> i64;
    pub fn gptq_model_vocab_size(m: *const gptq_model) -> i64;
    pub fn gptq_model_is_quantized(m: *const gptq_model) -> i32;
    pub fn gptq_quantize_options_init(o: *mut gptq_quantize_options);
    pub fn gptq_model_quantize(ctx: *mut gptq_ctx, m: *mut gptq_model, calib: *const gptq_tokens, opts: *const gptq_quantize_options) -> c_int;
    pub fn gptq_save_options_init(o: *mut gptq_save_options);
    pub fn gptq_model_save(ctx: *mut gptq_ctx, m: *mut gptq_model, dir: *const c_char, opts: *const gptq_save_options) -> c_int;
    pub fn gptq_model_save_dequantized(ctx: *mut gptq_ctx, m: *mut gptq_model, dir: *const c_char, force: i32) -> c_int;
    pub fn gptq_model_eval(ctx: *mut gptq_ctx, m: *mut gptq_model, text: *const gptq_tokens, seqlen: i64, out: *mut gptq_eval_result) -> c_int;
}
