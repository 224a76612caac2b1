//! Whole models: token data, Hugging Face Llama-family directories, sequential GPTQ
//! with a progress callback, saving and perplexity (`<gptq/model.h>`).

use std::any::Any;
use std::ffi::CString;
use std::os::raw::{c_int, c_void};
use std::os::unix::ffi::OsStrExt;
use std::panic::{self, AssertUnwindSafe};
use std::path::Path;
use std::ptr::{self, NonNull};
use std::slice;

use gptq_sys as sys;

use crate::context::Context;
use crate::error::{c_str, Error};
use crate::layer::Config;
use crate::pack::{Format, PackMode};
use crate::versioned::Versioned;

fn c_path(path: &Path) -> Result<CString, Error> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| Error::invalid(format!("{}: path contains a NUL byte", path.display())))
}

/// How a token file is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    /// JSON or safetensors ids by content, else bytes.
    Auto,
    /// The file's bytes are the tokens (byte-level vocabularies).
    Bytes,
    /// A JSON array of ids or of id arrays, or a safetensors I32/I64 tensor.
    Ids,
}

/// Token data: one or more sequences of ids (`gptq_tokens`).
#[derive(Debug)]
pub struct Tokens<'c> {
    raw: NonNull<sys::gptq_tokens>,
    _ctx: &'c Context,
}

impl<'c> Tokens<'c> {
    pub fn load<P: AsRef<Path>>(ctx: &'c Context, path: P, kind: TokenKind) -> Result<Tokens<'c>, Error> {
        let path = c_path(path.as_ref())?;
        let kind = match kind {
            TokenKind::Auto => sys::GPTQ_TOKENS_AUTO,
            TokenKind::Bytes => sys::GPTQ_TOKENS_BYTES,
            TokenKind::Ids => sys::GPTQ_TOKENS_IDS,
        };
        let mut raw = ptr::null_mut();
        ctx.check(unsafe { sys::gptq_tokens_load(ctx.as_ptr(), path.as_ptr(), kind, &mut raw) })?;
        Ok(Tokens { raw: NonNull::new(raw).expect("no tokens"), _ctx: ctx })
    }

    /// One sequence (the ids are copied).
    pub fn from_ids(ctx: &'c Context, ids: &[i32]) -> Result<Tokens<'c>, Error> {
        let mut raw = ptr::null_mut();
        let n = ids.len() as i64;
        ctx.check(unsafe { sys::gptq_tokens_from_ids(ctx.as_ptr(), ids.as_ptr(), n, &mut raw) })?;
        Ok(Tokens { raw: NonNull::new(raw).expect("no tokens"), _ctx: ctx })
    }

    /// Number of sequences.
    pub fn len(&self) -> usize {
        unsafe { sys::gptq_tokens_count(self.raw.as_ptr()) as usize }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Tokens over all sequences.
    pub fn total(&self) -> i64 {
        unsafe { sys::gptq_tokens_total(self.raw.as_ptr()) }
    }

    /// Sequence `i`, borrowed.
    pub fn sequence(&self, i: usize) -> Option<&[i32]> {
        let mut n = 0i64;
        let p = unsafe { sys::gptq_tokens_sequence(self.raw.as_ptr(), i as i64, &mut n) };
        if p.is_null() {
            return None;
        }
        // SAFETY: n ids at p, alive as long as the tokens.
        Some(unsafe { slice::from_raw_parts(p, n as usize) })
    }
}

impl Drop for Tokens<'_> {
    fn drop(&mut self) {
        unsafe { sys::gptq_tokens_free(self.raw.as_ptr()) }
    }
}

/// What the progress callback sees: once per quantized module, and once at each
/// layer's end (with an empty `module`).
#[derive(Debug, Clone)]
pub struct Progress {
    /// 0-based decoder layer.
    pub layer: i32,
    pub num_layers: i32,
    /// e.g. "self_attn.q_proj"; "" at a layer's end.
    pub module: String,
    /// Modules done so far over all layers, of `num_steps`.
    pub step: i32,
    pub num_steps: i32,
    pub loss: f64,
    pub damp_percent: f64,
    pub seconds: f64,
    pub elapsed: f64,
}

/// Options of sequential GPTQ, starting from the library's defaults (128 samples of
/// 2048 tokens, seed 0, true-sequential).
#[derive(Clone)]
pub struct QuantizeOptions {
    raw: Versioned<sys::gptq_quantize_options>,
}

impl QuantizeOptions {
    pub fn new() -> QuantizeOptions {
        QuantizeOptions { raw: Versioned::init(sys::gptq_quantize_options_init) }
    }
    pub fn nsamples(mut self, n: i64) -> Self {
        self.raw.nsamples = n;
        self
    }
    pub fn seqlen(mut self, n: i64) -> Self {
        self.raw.seqlen = n;
        self
    }
    pub fn seed(mut self, seed: u64) -> Self {
        self.raw.seed = seed;
        self
    }
    pub fn true_sequential(mut self, on: bool) -> Self {
        self.raw.true_sequential = on as i32;
        self
    }
    /// The per-layer options (bits, group size, act-order ...).
    pub fn config(mut self, cfg: &Config) -> Self {
        let size = self.raw.config.struct_size;
        self.raw.config = *cfg.raw();
        self.raw.config.struct_size = size;
        self
    }
}

impl Default for QuantizeOptions {
    fn default() -> Self {
        QuantizeOptions::new()
    }
}

/// Options of saving a GPTQ checkpoint, from the library's defaults ("gptq" v1,
/// clean packing, 4 GiB shards, no overwrite).
#[derive(Clone)]
pub struct SaveOptions {
    raw: Versioned<sys::gptq_save_options>,
}

impl SaveOptions {
    pub fn new() -> SaveOptions {
        SaveOptions { raw: Versioned::init(sys::gptq_save_options_init) }
    }
    pub fn format(mut self, format: Format) -> Self {
        self.raw.format = format.raw();
        self
    }
    pub fn pack_mode(mut self, mode: PackMode) -> Self {
        self.raw.pack_mode = mode.raw();
        self
    }
    pub fn max_shard_bytes(mut self, n: i64) -> Self {
        self.raw.max_shard_bytes = n;
        self
    }
    /// Replace an existing output directory.
    pub fn force(mut self, on: bool) -> Self {
        self.raw.force = on as i32;
        self
    }
}

impl Default for SaveOptions {
    fn default() -> Self {
        SaveOptions::new()
    }
}

/// Perplexity and what it was computed over.
#[derive(Debug, Clone, Copy)]
pub struct EvalResult {
    pub ppl: f64,
    pub nll: f64,
    pub tokens: i64,
    pub windows: i64,
    pub seconds: f64,
}

/// A Hugging Face model directory, float or GPTQ (`gptq_model`).
#[derive(Debug)]
pub struct Model<'c> {
    ctx: &'c Context,
    raw: NonNull<sys::gptq_model>,
}

struct Trampoline<'f> {
    f: &'f mut dyn FnMut(&Progress) -> bool,
    panic: Option<Box<dyn Any + Send>>,
}

/// The C callback: no panic may unwind through the library's frames, so one is kept,
/// the run cancelled, and the panic resumed after the library returns.
unsafe extern "C" fn on_progress(user: *mut c_void, p: *const sys::gptq_progress) -> c_int {
    let t = &mut *(user as *mut Trampoline<'_>);
    let p = &*p;
    let prog = Progress {
        layer: p.layer,
        num_layers: p.num_layers,
        module: c_str(p.module),
        step: p.step,
        num_steps: p.num_steps,
        loss: p.loss,
        damp_percent: p.damp_percent,
        seconds: p.seconds,
        elapsed: p.elapsed,
    };
    match panic::catch_unwind(AssertUnwindSafe(|| (t.f)(&prog))) {
        Ok(true) => 0,
        Ok(false) => 1,
        Err(e) => {
            t.panic = Some(e);
            1
        }
    }
}

impl<'c> Model<'c> {
    pub fn open<P: AsRef<Path>>(ctx: &'c Context, dir: P) -> Result<Model<'c>, Error> {
        let dir = c_path(dir.as_ref())?;
        let mut raw = ptr::null_mut();
        ctx.check(unsafe { sys::gptq_model_open(ctx.as_ptr(), dir.as_ptr(), &mut raw) })?;
        Ok(Model { ctx, raw: NonNull::new(raw).expect("no model") })
    }

    pub fn architecture(&self) -> String {
        c_str(unsafe { sys::gptq_model_architecture(self.raw.as_ptr()) })
    }
    pub fn num_layers(&self) -> i64 {
        unsafe { sys::gptq_model_num_layers(self.raw.as_ptr()) }
    }
    pub fn hidden_size(&self) -> i64 {
        unsafe { sys::gptq_model_hidden_size(self.raw.as_ptr()) }
    }
    pub fn vocab_size(&self) -> i64 {
        unsafe { sys::gptq_model_vocab_size(self.raw.as_ptr()) }
    }
    pub fn is_quantized(&self) -> bool {
        unsafe { sys::gptq_model_is_quantized(self.raw.as_ptr()) != 0 }
    }

    /// Sequential GPTQ over every decoder-layer linear. `progress` is called after
    /// every module and layer; returning false cancels (ErrorKind::Cancelled). A panic
    /// in it cancels the run and is resumed here.
    pub fn quantize<F>(&mut self, calib: &Tokens<'_>, opts: &QuantizeOptions, mut progress: F) -> Result<(), Error>
    where
        F: FnMut(&Progress) -> bool,
    {
        let mut t = Trampoline { f: &mut progress, panic: None };
        let mut o = opts.raw.clone();
        o.progress = Some(on_progress);
        o.progress_user = &mut t as *mut Trampoline<'_> as *mut c_void;
        let status = unsafe { sys::gptq_model_quantize(self.ctx.as_ptr(), self.raw.as_ptr(), calib.raw.as_ptr(), o.as_ptr()) };
        if let Some(p) = t.panic.take() {
            panic::resume_unwind(p);
        }
        self.ctx.check(status)
    }

    /// Write the quantized model as a GPTQ checkpoint directory.
    pub fn save<P: AsRef<Path>>(&mut self, dir: P, opts: &SaveOptions) -> Result<(), Error> {
        let dir = c_path(dir.as_ref())?;
        self.ctx.check(unsafe { sys::gptq_model_save(self.ctx.as_ptr(), self.raw.as_ptr(), dir.as_ptr(), opts.raw.as_ptr()) })
    }

    /// Write a quantized model back as a float16 checkpoint.
    pub fn save_dequantized<P: AsRef<Path>>(&mut self, dir: P, force: bool) -> Result<(), Error> {
        let dir = c_path(dir.as_ref())?;
        self.ctx.check(unsafe { sys::gptq_model_save_dequantized(self.ctx.as_ptr(), self.raw.as_ptr(), dir.as_ptr(), force as i32) })
    }

    /// Perplexity in non-overlapping windows of `seqlen` tokens.
    pub fn eval(&mut self, text: &Tokens<'_>, seqlen: i64) -> Result<EvalResult, Error> {
        // Room for fields a newer library may append; struct_size says how much.
        #[repr(C)]
        struct Out {
            r: sys::gptq_eval_result,
            spare: [u8; 256],
        }
        let mut out: Box<Out> = Box::new(unsafe { std::mem::zeroed() });
        out.r.struct_size = std::mem::size_of::<Out>() as u32;
        self.ctx.check(unsafe { sys::gptq_model_eval(self.ctx.as_ptr(), self.raw.as_ptr(), text.raw.as_ptr(), seqlen, &mut out.r) })?;
        Ok(EvalResult { ppl: out.r.ppl, nll: out.r.nll, tokens: out.r.tokens, windows: out.r.windows, seconds: out.r.seconds })
    }
}

impl Drop for Model<'_> {
    fn drop(&mut self) {
        unsafe { sys::gptq_model_free(self.raw.as_ptr()) }
    }
}
