//! One layer through the safe API: Hessian, GPTQ, the result's slices, packing, errors.

mod common;

use common::Lcg;
use gptq::{Config, Context, ContextOptions, ErrorKind, Format, Hessian, PackMode};

const OUT: i64 = 64;
const IN: i64 = 256;

fn data() -> (Vec<f32>, Vec<f32>) {
    let mut rng = Lcg(7);
    let w = rng.fill((OUT * IN) as usize, 0.05);
    let x = rng.fill((8 * 32 * IN) as usize, 1.0);
    (w, x)
}

#[test]
fn hessian_accumulates_and_merges() {
    let ctx = Context::new().unwrap();
    let (_, x) = data();
    let mut whole = Hessian::new(&ctx, IN).unwrap();
    whole.add(&x, 8, 32).unwrap();
    let half = x.len() / 2;
    let mut a = Hessian::new(&ctx, IN).unwrap();
    let mut b = Hessian::new(&ctx, IN).unwrap();
    a.add(&x[..half], 4, 32).unwrap();
    b.add(&x[half..], 4, 32).unwrap();
    a.merge(&b).unwrap();
    assert_eq!((a.nsamples(), a.in_features()), (8, IN));
    let (ha, hw) = (a.read().unwrap(), whole.read().unwrap());
    let worst = ha.iter().zip(&hw).map(|(p, q)| (p - q).abs() / (1.0 + q.abs())).fold(0.0f32, f32::max);
    assert!(worst < 1e-4, "merged Hessian differs by {}", worst);
    // diag(H) = 2/n * sum of squares of a column: positive.
    assert!((0..IN as usize).all(|i| hw[i * IN as usize + i] > 0.0));
}

#[test]
fn quantize_pack_unpack_matmul() {
    let ctx = Context::with_options(&ContextOptions::new().threads(2)).unwrap();
    let (w, x) = data();
    let mut h = Hessian::new(&ctx, IN).unwrap();
    h.add(&x, 8, 32).unwrap();
    let cfg = Config::new().bits(4).group_size(64).desc_act(true);
    let r = gptq::quantize_layer(&ctx, &w, OUT, IN, Some(&h), &cfg).unwrap();
    assert_eq!((r.out_features(), r.in_features(), r.ngroups()), (OUT, IN, 4));
    assert_eq!(r.config().raw().desc_act, 1);
    assert!(r.codes().iter().all(|&c| (0..16).contains(&c)));
    let mut perm = r.perm().to_vec();
    perm.sort_unstable();
    assert_eq!(perm, (0..IN as i32).collect::<Vec<_>>());
    // Q = scale * (code - zero) per group.
    let (codes, scales, zeros, g_idx, q) = (r.codes(), r.scales(), r.zeros(), r.g_idx(), r.q());
    for row in 0..OUT as usize {
        for col in 0..IN as usize {
            let g = g_idx[col] as usize * OUT as usize + row;
            let want = scales[g] * (codes[row * IN as usize + col] - zeros[g]) as f32;
            assert!((q[row * IN as usize + col] - want).abs() <= 1e-6 * want.abs().max(1.0));
        }
    }
    assert!(r.loss() > 0.0);

    for format in [Format::V1, Format::V2] {
        let mut p = r.pack(format, PackMode::Clean).unwrap();
        assert_eq!(p.qweight_shape, [IN * 4 / 32, OUT]);
        assert_eq!(p.qzeros_shape, [4, OUT * 4 / 32]);
        let u = p.unpack(&ctx, PackMode::Clean).unwrap();
        assert_eq!(u.codes, codes);
        assert_eq!(u.zeros, zeros);
        assert_eq!(u.g_idx, g_idx);
    }

    let mut p = r.pack(Format::V1, PackMode::Clean).unwrap();
    let xin = &x[..2 * IN as usize];
    let y = p.matmul(&ctx, xin, 2, None).unwrap();
    for b in 0..2 {
        for o in 0..OUT as usize {
            let (mut exact, mut mag) = (0.0f64, 0.0f64);
            for j in 0..IN as usize {
                let t = xin[b * IN as usize + j] as f64 * q[o * IN as usize + j] as f64;
                exact += t;
                mag += t.abs();
            }
            let err = (y[b * OUT as usize + o] as f64 - exact).abs();
            assert!(err <= mag / 1024.0 + 1e-5, "y[{}, {}] off by {}", b, o, err);
        }
    }
}

#[test]
fn repack_from_unpacked_is_identical() {
    let ctx = Context::new().unwrap();
    let (w, x) = data();
    let mut h = Hessian::new(&ctx, IN).unwrap();
    h.add(&x, 8, 32).unwrap();
    let r = gptq::quantize_layer(&ctx, &w, OUT, IN, Some(&h), &Config::new()).unwrap();
    let mut p = r.pack(Format::V2, PackMode::Clean).unwrap();
    let mut u = p.unpack(&ctx, PackMode::Clean).unwrap();
    assert_eq!(u.pack(&ctx, Format::V2, PackMode::Clean).unwrap(), p);
}

#[test]
fn errors_carry_kind_and_message() {
    let ctx = Context::new().unwrap();
    let (w, x) = data();
    let mut h = Hessian::new(&ctx, IN).unwrap();
    h.add(&x, 8, 32).unwrap();
    let err = gptq::quantize_layer(&ctx, &w[..(OUT * 128) as usize], OUT, 128, Some(&h), &Config::new())
        .expect_err("a Hessian of the wrong size must fail");
    assert_eq!(err.kind(), ErrorKind::Shape);
    assert_eq!(err.status(), -8);
    assert!(err.message().contains("Hessian"), "{}", err);
    assert_eq!(ctx.last_error(), err.message());
    let err = gptq::quantize_layer(&ctx, &w, OUT, IN, Some(&h), &Config::new().bits(5)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotSupported);
    // The crate checks slice lengths before the library reads them.
    let err = h.add(&x[..10], 8, 32).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    assert!(err.to_string().contains("x: 10 elements"), "{}", err);
}

#[test]
fn log_sink_sees_the_damping_warning() {
    use std::sync::{Arc, Mutex};
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = lines.clone();
    let opts = ContextOptions::new().log(gptq::sys::GPTQ_LOG_INFO, move |level, msg| {
        sink.lock().unwrap().push((level, msg.to_string()));
    });
    let ctx = Context::with_options(&opts).unwrap();
    // Positive definite only once damp_percent > 0.015: the first Cholesky fails and
    // the library retries with more damping, with a warning.
    let n = 64usize;
    let mut h = vec![0.0f32; n * n];
    for i in 0..n {
        h[i * n + i] = 1.0;
    }
    h[1] = 1.015;
    h[n] = 1.015;
    let hess = Hessian::from_matrix(&ctx, n as i64, &h, 1).unwrap();
    let w = Lcg(5).fill(32 * n, 0.1);
    let r = gptq::quantize_layer(&ctx, &w, 32, n as i64, Some(&hess), &Config::new().group_size(-1)).unwrap();
    assert!((r.damp_percent() - 0.02).abs() < 1e-9);
    let lines = lines.lock().unwrap();
    assert!(
        lines.iter().any(|(level, msg)| *level == gptq::sys::GPTQ_LOG_WARN && msg.contains("Cholesky")),
        "{:?}",
        *lines
    );
}

#[test]
fn rtn_and_helpers() {
    let ctx = Context::new().unwrap();
    let (w, _) = data();
    let r = gptq::quantize_layer(&ctx, &w, OUT, IN, None, &Config::new().rtn(true)).unwrap();
    assert_eq!(r.loss(), 0.0);
    assert_eq!(gptq::num_groups(300, 128), Some(3));
    assert_eq!(gptq::packed_shape(3, 32, 32, 1).unwrap(), ([3, 32], [1, 3]));
    assert_eq!(gptq::fp32_to_fp16(1.0), 0x3c00);
    assert_eq!(gptq::fp16_to_fp32(0xc000), -2.0);
    assert!(gptq::backend_available(gptq::Backend::Cpu).is_ok());
    assert!(gptq::version().starts_with("0."));
}
