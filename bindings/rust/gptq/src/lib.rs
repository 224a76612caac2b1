//! Safe Rust interface to libgptq, GPTQ post-training quantization (Frantar et al.,
//! 2023) as a C library.
//!
//! ```no_run
//! use gptq::{Config, Context, Hessian, Model, QuantizeOptions, Tokens};
//!
//! # fn main() -> Result<(), gptq::Error> {
//! let ctx = Context::new()?;
//! # let (w, x) = (vec![0.0f32; 64 * 128], vec![0.0f32; 8 * 16 * 128]);
//! let mut h = Hessian::new(&ctx, 128)?;
//! h.add(&x, 8, 16)?;                               // [8 * 16, 128] float32
//! let r = gptq::quantize_layer(&ctx, &w, 64, 128, Some(&h), &Config::new().bits(4))?;
//! let packed = r.pack(gptq::Format::V1, gptq::PackMode::Clean)?;
//!
//! let mut model = Model::open(&ctx, "models/tiny-llama-bytes")?;
//! let calib = Tokens::load(&ctx, "models/tiny-llama-bytes/calib.txt", gptq::TokenKind::Bytes)?;
//! let opts = QuantizeOptions::new().nsamples(8).seqlen(64);
//! model.quantize(&calib, &opts, |p| { println!("{} {}", p.layer, p.module); true })?;
//! model.save("out", &gptq::SaveOptions::new())?;
//! # Ok(()) }
//! ```
//!
//! Every handle is freed when dropped; objects made with a [`Context`] borrow it, so
//! the compiler keeps the context alive as long as they are. Errors are [`Error`]s with
//! the library's status code and message. Slices go in without copies; the arrays of
//! a [`QuantResult`] come out as slices into the library's memory.
//!
//! The library is linked through pkg-config (`gptq-sys`); set PKG_CONFIG_PATH to an
//! installed prefix's `lib/pkgconfig`.

mod context;
mod error;
mod layer;
mod model;
mod pack;
mod versioned;

pub use context::{backend_available, version, Backend, Context, ContextOptions, LogFn};
pub use error::{Error, ErrorKind};
pub use layer::{quantize_layer, Config, Hessian, QuantResult};
pub use model::{EvalResult, Model, Progress, QuantizeOptions, SaveOptions, TokenKind, Tokens};
pub use pack::{fp16_to_fp32, fp32_to_fp16, num_groups, packed_shape, Format, PackMode, Packed, Unpacked};

/// The raw declarations, for what this crate does not wrap.
pub use gptq_sys as sys;
