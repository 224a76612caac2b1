//! The bundled model: quantize with a progress callback, save, reload, evaluate.

mod common;

use gptq::{Context, ErrorKind, Model, QuantizeOptions, SaveOptions, TokenKind, Tokens};

#[test]
fn quantize_save_reload_eval() {
    let ctx = Context::new().unwrap();
    let dir = common::tiny();
    let mut m = Model::open(&ctx, &dir).unwrap();
    assert_eq!(m.architecture(), "LlamaForCausalLM");
    assert_eq!((m.num_layers(), m.vocab_size()), (4, 256));
    assert!(!m.is_quantized());

    let eval = Tokens::load(&ctx, dir.join("eval.txt"), TokenKind::Bytes).unwrap();
    let text = Tokens::from_ids(&ctx, &eval.sequence(0).unwrap()[..16 * 256]).unwrap();
    let before = m.eval(&text, 256).unwrap();
    assert_eq!((before.windows, before.tokens), (16, 16 * 255));

    let calib = Tokens::load(&ctx, dir.join("calib.txt"), TokenKind::Auto).unwrap();
    assert_eq!(calib.len(), 1);
    let mut seen = Vec::new();
    let opts = QuantizeOptions::new().nsamples(8).seqlen(64).config(&gptq::Config::new().bits(4));
    m.quantize(&calib, &opts, |p| {
        seen.push(p.clone());
        true
    })
    .unwrap();
    assert!(m.is_quantized());
    let modules: Vec<_> = seen.iter().filter(|p| !p.module.is_empty()).collect();
    assert_eq!(modules.len(), 28);
    assert_eq!(modules[0].module, "self_attn.q_proj");
    assert_eq!(modules.last().unwrap().num_steps, 28);

    let out = std::env::temp_dir().join(format!("gptq-rust-test-{}", std::process::id()));
    m.save(&out, &SaveOptions::new().force(true)).unwrap();
    let err = m.save(&out, &SaveOptions::new()).expect_err("an existing directory without force");
    assert!(err.message().contains(out.file_name().unwrap().to_str().unwrap()), "{}", err);

    let mut q = Model::open(&ctx, &out).unwrap();
    assert!(q.is_quantized());
    let after = q.eval(&text, 256).unwrap();
    std::fs::remove_dir_all(&out).unwrap();
    assert!(after.ppl < before.ppl * 1.01 && before.ppl < after.ppl * 1.01, "{} vs {}", before.ppl, after.ppl);
}

#[test]
fn progress_cancels() {
    let ctx = Context::new().unwrap();
    let dir = common::tiny();
    let mut m = Model::open(&ctx, &dir).unwrap();
    let calib = Tokens::load(&ctx, dir.join("calib.txt"), TokenKind::Bytes).unwrap();
    let mut calls = 0;
    let err = m
        .quantize(&calib, &QuantizeOptions::new().nsamples(8).seqlen(64), |_| {
            calls += 1;
            calls < 3
        })
        .expect_err("cancelled");
    assert_eq!(err.kind(), ErrorKind::Cancelled);
    assert_eq!(calls, 3);
    assert!(!m.is_quantized());
}

#[test]
fn a_panic_in_progress_reaches_the_caller() {
    let ctx = Context::new().unwrap();
    let dir = common::tiny();
    let mut m = Model::open(&ctx, &dir).unwrap();
    let calib = Tokens::load(&ctx, dir.join("calib.txt"), TokenKind::Bytes).unwrap();
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let _ = m.quantize(&calib, &QuantizeOptions::new().nsamples(8).seqlen(64), |p| panic!("stop at {}", p.module));
    }));
    let msg = caught.expect_err("the panic").downcast::<String>().unwrap();
    assert_eq!(*msg, "stop at self_attn.q_proj");
    assert!(!m.is_quantized());
}

#[test]
fn missing_model_is_not_found() {
    let ctx = Context::new().unwrap();
    let err = Model::open(&ctx, "/nonexistent/model").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert!(err.message().contains("/nonexistent/model"));
}
