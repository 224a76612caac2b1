//! One linear layer: the Hessian accumulator, the configuration and GPTQ itself.

use std::ptr::{self, NonNull};
use std::slice;

use gptq_sys as sys;

use crate::context::Context;
use crate::error::{check, Error};
use crate::pack::{Format, PackMode, Packed};
use crate::versioned::Versioned;

fn usize_of(n: i64) -> usize {
    usize::try_from(n).expect("negative size from the library")
}

/// Checks that a slice holds `rows * cols` elements before the library reads it.
pub(crate) fn expect_len(what: &str, len: usize, rows: i64, cols: i64) -> Result<(), Error> {
    let want = rows.checked_mul(cols).and_then(|n| usize::try_from(n).ok());
    if want != Some(len) {
        return Err(Error::invalid(format!("{}: {} elements, expected {} x {}", what, len, rows, cols)));
    }
    Ok(())
}

/// The accumulator H = 2/n * sum over samples of X_s^T X_s (`gptq_hessian`).
#[derive(Debug)]
pub struct Hessian<'c> {
    ctx: &'c Context,
    raw: NonNull<sys::gptq_hessian>,
}

impl<'c> Hessian<'c> {
    /// A zeroed accumulator for `in_features` input channels.
    pub fn new(ctx: &'c Context, in_features: i64) -> Result<Hessian<'c>, Error> {
        let mut raw = ptr::null_mut();
        ctx.check(unsafe { sys::gptq_hessian_create(ctx.as_ptr(), in_features, &mut raw) })?;
        Ok(Hessian { ctx, raw: NonNull::new(raw).expect("no Hessian") })
    }

    /// An accumulator starting from `h` ([in, in]) standing for `nsamples` samples.
    pub fn from_matrix(ctx: &'c Context, in_features: i64, h: &[f32], nsamples: i64) -> Result<Hessian<'c>, Error> {
        expect_len("h", h.len(), in_features, in_features)?;
        let mut raw = ptr::null_mut();
        ctx.check(unsafe { sys::gptq_hessian_create_from(ctx.as_ptr(), in_features, h.as_ptr(), nsamples, &mut raw) })?;
        Ok(Hessian { ctx, raw: NonNull::new(raw).expect("no Hessian") })
    }

    /// Add `nsamples` sequences of `seqlen` rows: `x` is [nsamples * seqlen, in].
    pub fn add(&mut self, x: &[f32], nsamples: i64, seqlen: i64) -> Result<(), Error> {
        expect_len("x", x.len(), nsamples.saturating_mul(seqlen), self.in_features())?;
        self.ctx.check(unsafe { sys::gptq_hessian_add(self.ctx.as_ptr(), self.raw.as_ptr(), x.as_ptr(), nsamples, seqlen) })
    }

    /// Add the samples of another accumulator of the same size.
    pub fn merge(&mut self, other: &Hessian<'_>) -> Result<(), Error> {
        self.ctx.check(unsafe { sys::gptq_hessian_merge(self.ctx.as_ptr(), self.raw.as_ptr(), other.raw.as_ptr()) })
    }

    pub fn in_features(&self) -> i64 {
        unsafe { sys::gptq_hessian_in_features(self.raw.as_ptr()) }
    }

    pub fn nsamples(&self) -> i64 {
        unsafe { sys::gptq_hessian_nsamples(self.raw.as_ptr()) }
    }

    /// H, [in, in] row-major.
    pub fn read(&self) -> Result<Vec<f32>, Error> {
        let n = usize_of(self.in_features());
        let mut h = vec![0.0f32; n * n];
        self.ctx.check(unsafe { sys::gptq_hessian_read(self.ctx.as_ptr(), self.raw.as_ptr(), h.as_mut_ptr(), h.len()) })?;
        Ok(h)
    }
}

impl Drop for Hessian<'_> {
    fn drop(&mut self) {
        unsafe { sys::gptq_hessian_free(self.raw.as_ptr()) }
    }
}

/// A layer configuration (`gptq_config`), starting from the library's defaults
/// (4 bits, groups of 128, symmetric, damp 0.01).
#[derive(Clone)]
pub struct Config {
    raw: Versioned<sys::gptq_config>,
}

impl Config {
    pub fn new() -> Config {
        Config { raw: Versioned::init(sys::gptq_config_init) }
    }

    /// 2, 3, 4 or 8.
    pub fn bits(mut self, bits: i32) -> Self {
        self.raw.bits = bits;
        self
    }
    /// Columns per group, or -1 for one group per row.
    pub fn group_size(mut self, group_size: i32) -> Self {
        self.raw.group_size = group_size;
        self
    }
    pub fn sym(mut self, sym: bool) -> Self {
        self.raw.sym = sym as i32;
        self
    }
    /// Act-order: columns in descending order of diag(H).
    pub fn desc_act(mut self, on: bool) -> Self {
        self.raw.desc_act = on as i32;
        self
    }
    pub fn static_groups(mut self, on: bool) -> Self {
        self.raw.static_groups = on as i32;
        self
    }
    pub fn block_size(mut self, block_size: i32) -> Self {
        self.raw.block_size = block_size;
        self
    }
    /// Plain round-to-nearest (no Hessian needed).
    pub fn rtn(mut self, on: bool) -> Self {
        self.raw.rtn = on as i32;
        self
    }
    pub fn damp_percent(mut self, damp: f64) -> Self {
        self.raw.damp_percent = damp;
        self
    }

    /// The C struct, to read fields or set those this type has no method for.
    pub fn raw(&self) -> &sys::gptq_config {
        &self.raw
    }
    pub fn raw_mut(&mut self) -> &mut sys::gptq_config {
        &mut self.raw
    }
    pub(crate) fn as_ptr(&self) -> *const sys::gptq_config {
        self.raw.as_ptr()
    }
}

impl Default for Config {
    fn default() -> Self {
        Config::new()
    }
}

/// Quantize one linear layer: `w` is [out, in] float32 (nn.Linear layout), `hessian`
/// accumulated over its inputs (`None` only with `rtn`).
pub fn quantize_layer<'c>(
    ctx: &'c Context,
    w: &[f32],
    out_features: i64,
    in_features: i64,
    hessian: Option<&Hessian<'_>>,
    cfg: &Config,
) -> Result<QuantResult<'c>, Error> {
    expect_len("w", w.len(), out_features, in_features)?;
    let h = hessian.map_or(ptr::null(), |h| h.raw.as_ptr() as *const _);
    let mut raw = ptr::null_mut();
    ctx.check(unsafe { sys::gptq_layer_quantize(ctx.as_ptr(), w.as_ptr(), out_features, in_features, h, cfg.as_ptr(), &mut raw) })?;
    Ok(QuantResult { ctx, raw: NonNull::new(raw).expect("no result") })
}

/// A quantized layer (`gptq_result`). Its arrays are slices into the library's memory,
/// borrowed from the result.
#[derive(Debug)]
pub struct QuantResult<'c> {
    ctx: &'c Context,
    raw: NonNull<sys::gptq_result>,
}

impl<'c> QuantResult<'c> {
    fn r(&self) -> *const sys::gptq_result {
        self.raw.as_ptr()
    }
    fn view<T>(&self, p: *const T, n: usize) -> &[T] {
        if n == 0 || p.is_null() {
            return &[];
        }
        // SAFETY: the library documents n elements at p, alive as long as the result.
        unsafe { slice::from_raw_parts(p, n) }
    }

    pub fn out_features(&self) -> i64 {
        unsafe { sys::gptq_result_out_features(self.r()) }
    }
    pub fn in_features(&self) -> i64 {
        unsafe { sys::gptq_result_in_features(self.r()) }
    }
    pub fn ngroups(&self) -> i64 {
        unsafe { sys::gptq_result_ngroups(self.r()) }
    }
    /// The configuration used.
    pub fn config(&self) -> Config {
        let mut c = Config::new();
        let status = unsafe { sys::gptq_result_config(self.r(), c.raw_mut()) };
        check(status, ptr::null()).expect("gptq_result_config with an initialised config");
        c
    }
    /// Integer codes [out, in] in original column order.
    pub fn codes(&self) -> &[i32] {
        self.view(unsafe { sys::gptq_result_codes(self.r()) }, self.rc())
    }
    /// float32 scales [ngroups, out].
    pub fn scales(&self) -> &[f32] {
        self.view(unsafe { sys::gptq_result_scales(self.r()) }, self.gr())
    }
    /// True integer zero points [ngroups, out].
    pub fn zeros(&self) -> &[i32] {
        self.view(unsafe { sys::gptq_result_zeros(self.r()) }, self.gr())
    }
    /// The group of every input column [in].
    pub fn g_idx(&self) -> &[i32] {
        self.view(unsafe { sys::gptq_result_g_idx(self.r()) }, usize_of(self.in_features()))
    }
    /// Processing order [in]; the identity without act-order.
    pub fn perm(&self) -> &[i32] {
        self.view(unsafe { sys::gptq_result_perm(self.r()) }, usize_of(self.in_features()))
    }
    /// Dequantized weights [out, in].
    pub fn q(&self) -> &[f32] {
        self.view(unsafe { sys::gptq_result_q(self.r()) }, self.rc())
    }
    pub fn loss(&self) -> f64 {
        unsafe { sys::gptq_result_loss(self.r()) }
    }
    pub fn damp_percent(&self) -> f64 {
        unsafe { sys::gptq_result_damp_percent(self.r()) }
    }
    pub fn dead_columns(&self) -> i64 {
        unsafe { sys::gptq_result_dead_columns(self.r()) }
    }

    /// The checkpoint tensors of this layer.
    pub fn pack(&self, format: Format, mode: PackMode) -> Result<Packed, Error> {
        let bits = self.config().raw().bits;
        let mut p = Packed::zeroed(bits, format, self.out_features(), self.in_features(), self.ngroups())?;
        let mut c = p.c_view();
        self.ctx.check(unsafe { sys::gptq_pack_result(self.ctx.as_ptr(), self.r(), mode.raw(), &mut c) })?;
        Ok(p)
    }

    fn rc(&self) -> usize {
        usize_of(self.out_features()) * usize_of(self.in_features())
    }
    fn gr(&self) -> usize {
        usize_of(self.ngroups()) * usize_of(self.out_features())
    }
}

impl Drop for QuantResult<'_> {
    fn drop(&mut self) {
        unsafe { sys::gptq_result_free(self.raw.as_ptr()) }
    }
}

