//! Quantize one linear layer and a whole model with the safe Rust API.
//!
//!     cargo run --example quantize_model -- [MODEL_DIR [OUT_DIR]]
//!
//! MODEL_DIR defaults to the bundled models/tiny-llama-bytes; its calib.txt gives 8
//! calibration windows of 64 bytes, eval.txt the perplexity before and after (32
//! windows of 256). OUT_DIR, if given, receives the GPTQ checkpoint.

use std::path::PathBuf;
use std::process::ExitCode;

use gptq::{Config, Context, Format, Hessian, Model, PackMode, QuantizeOptions, SaveOptions, TokenKind, Tokens};

fn layer(ctx: &Context) -> Result<(), gptq::Error> {
    let (out, inp) = (128i64, 256i64);
    let mut state = 1u32;
    let mut next = move || {
        state = state.wrapping_mul(1664525).wrapping_add(1013904223);
        (state >> 8) as f32 / 8388608.0 - 1.0
    };
    let w: Vec<f32> = (0..out * inp).map(|_| 0.05 * next()).collect();
    let x: Vec<f32> = (0..8 * 32 * inp).map(|_| next()).collect();

    let mut h = Hessian::new(ctx, inp)?;
    h.add(&x, 8, 32)?;
    let r = gptq::quantize_layer(ctx, &w, out, inp, Some(&h), &Config::new().bits(4).group_size(64))?;
    let mut packed = r.pack(Format::V1, PackMode::Clean)?;
    let y = packed.matmul(ctx, &x[..inp as usize], 1, None)?;
    println!(
        "layer {}x{}: loss {:.4}, qweight {:?}, qzeros {:?}, y[0] {:.4}",
        out, inp, r.loss(), packed.qweight_shape, packed.qzeros_shape, y[0]
    );
    Ok(())
}

fn run(dir: PathBuf, out: Option<PathBuf>) -> Result<(), gptq::Error> {
    let ctx = Context::new()?;
    println!("libgptq {}", gptq::version());
    layer(&ctx)?;

    let mut model = Model::open(&ctx, &dir)?;
    let all = Tokens::load(&ctx, dir.join("eval.txt"), TokenKind::Bytes)?;
    let seq = all.sequence(0).unwrap_or(&[]);
    let text = Tokens::from_ids(&ctx, &seq[..seq.len().min(32 * 256)])?;
    let before = model.eval(&text, 256)?;

    let calib = Tokens::load(&ctx, dir.join("calib.txt"), TokenKind::Auto)?;
    let opts = QuantizeOptions::new().nsamples(8).seqlen(64);
    model.quantize(&calib, &opts, |p| {
        if p.module.is_empty() {
            println!("layer {}/{} done  {:.2}s", p.layer + 1, p.num_layers, p.elapsed);
        }
        true
    })?;
    let after = model.eval(&text, 256)?;
    if let Some(out) = out {
        model.save(&out, &SaveOptions::new().force(true))?;
        println!("saved {}", out.display());
    }
    println!("model {}: ppl before {:.4} after {:.4}", model.architecture(), before.ppl, after.ppl);
    Ok(())
}

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../..");
    let dir = args.next().map(PathBuf::from).unwrap_or_else(|| root.join("models/tiny-llama-bytes"));
    match run(dir, args.next().map(PathBuf::from)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("quantize_model: {}", e);
            ExitCode::FAILURE
        }
    }
}
