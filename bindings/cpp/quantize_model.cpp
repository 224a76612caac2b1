/*
 * Quantize one linear layer and a whole model with the C++ wrapper <gptq/gptq.hpp>.
 *
 *   quantize_model [MODEL_DIR [OUT_DIR]]
 *
 * MODEL_DIR defaults to models/tiny-llama-bytes (run from the repository root); its
 * calib.txt gives 8 calibration windows of 64 bytes, eval.txt the perplexity before
 * and after. OUT_DIR (default: none) receives the GPTQ checkpoint. Exit status 0 when
 * the layer's packed matmul agrees with its dequantized weights and the quantized
 * model's perplexity is within 2 % of the float model's.
 */
#include <gptq/gptq.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

namespace {

/* Numerical Recipes' LCG: the same numbers on every platform. */
struct Lcg {
    uint32_t state = 12345u;
    float next()
    {
        state = state * 1664525u + 1013904223u;
        return static_cast<float>(state >> 8) / 8388608.0f - 1.0f;
    }
};

bool quantize_layer(const gptq::Context &ctx)
{
    const int64_t out = 128, in = 256, nsamples = 8, seqlen = 32;
    Lcg rng;
    std::vector<float> w(static_cast<size_t>(out * in)), x(static_cast<size_t>(nsamples * seqlen * in));
    for (float &v : w)
        v = 0.05f * rng.next();
    for (float &v : x)
        v = rng.next();

    gptq::Hessian h(ctx, in);
    h.add(x.data(), nsamples, seqlen);
    /* A Hessian can also start from a matrix, e.g. one saved earlier. */
    std::vector<float> saved = h.read();
    gptq::Hessian restored(ctx, in, saved.data(), h.nsamples());
    if (restored.read() != saved || restored.nsamples() != nsamples)
        return false;
    gptq::Config cfg;
    cfg.bits = 4;
    cfg.group_size = 64;
    cfg.desc_act = 1;
    gptq::Result r = gptq::quantize_layer(ctx, w.data(), out, in, h, cfg);
    gptq::Packed p = r.pack(ctx);
    gptq::Unpacked u = gptq::unpack(ctx, p);

    /* Unpacking gives back the codes; the matmul agrees with x * Q^T (Q has float32
     * scales, the packed tensors float16 ones: a relative 2^-11 per product). */
    bool same = std::equal(u.codes.begin(), u.codes.end(), r.codes().begin());
    std::vector<float> y = p.matmul(ctx, x.data(), 4);
    double worst = 0.0;
    for (int64_t b = 0; b < 4; b++) {
        for (int64_t o = 0; o < out; o++) {
            double ref = 0.0, mag = 0.0;
            for (int64_t j = 0; j < in; j++) {
                double t = static_cast<double>(x[static_cast<size_t>(b * in + j)]) *
                           r.q()[static_cast<size_t>(o * in + j)];
                ref += t;
                mag += std::fabs(t);
            }
            double err = std::fabs(y[static_cast<size_t>(b * out + o)] - ref);
            worst = std::max(worst, err / (mag + 1e-6));
        }
    }
    std::printf("layer %lldx%lld: loss %.4g, %lld groups, codes round-trip %s, "
                "matmul relative error %.2g\n",
                static_cast<long long>(out), static_cast<long long>(in), r.loss(),
                static_cast<long long>(r.ngroups()), same ? "ok" : "DIFFERENT", worst);
    return same && worst < 1e-3;
}

} // namespace

int main(int argc, char **argv)
{
    std::string dir = argc > 1 ? argv[1] : "models/tiny-llama-bytes";
    std::string out_dir = argc > 2 ? argv[2] : "";
    try {
        gptq::Context ctx;
        std::printf("libgptq %s, backend %s\n", gptq_version(), ctx.backend());
        bool ok = quantize_layer(ctx);

        /* Errors are exceptions carrying the library's message. */
        try {
            gptq::Model missing(ctx, dir + "/no-such-dir");
        } catch (const gptq::Error &e) {
            std::printf("expected error (%s): %s\n", gptq_strerror(e.status()), e.what());
        }

        gptq::Model model(ctx, dir);
        gptq::Tokens calib = gptq::Tokens::load(ctx, dir + "/calib.txt", GPTQ_TOKENS_BYTES);
        gptq::Tokens all = gptq::Tokens::load(ctx, dir + "/eval.txt", GPTQ_TOKENS_BYTES);
        gptq::View<int32_t> seq = all.sequence(0);
        size_t n = std::min<size_t>(seq.size, 32 * 256);
        gptq::Tokens text = gptq::Tokens::from_ids(ctx, std::vector<int32_t>(seq.begin(), seq.begin() + n));
        gptq_eval_result before = model.eval(text, 256);

        gptq::QuantizeOptions opts;
        opts.nsamples = 8;
        opts.seqlen = 64;
        int modules = 0;
        model.quantize(calib, opts, [&modules](const gptq_progress &p) {
            if (p.module[0] != '\0')
                modules++;
            else
                std::printf("layer %d/%d  %.2fs\n", p.layer + 1, p.num_layers, p.elapsed);
            return true;
        });
        gptq_eval_result after = model.eval(text, 256);
        if (!out_dir.empty()) {
            gptq::SaveOptions so;
            so.force = 1;
            model.save(out_dir, so);
            std::printf("saved %s\n", out_dir.c_str());
        }
        std::printf("model %s: %d modules quantized, ppl before %.4f after %.4f\n",
                    model.architecture().c_str(), modules, before.ppl, after.ppl);
        ok = ok && modules == 7 * model.num_layers() && after.ppl < before.ppl * 1.02;
        return ok ? 0 : 1;
    } catch (const gptq::Error &e) {
        std::fprintf(stderr, "quantize_model: %s (%s)\n", e.what(), gptq_strerror(e.status()));
        return 1;
    }
}
