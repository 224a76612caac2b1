/*
 * libgptq - a header-only C++11 wrapper over <gptq/gptq.h> and <gptq/model.h>.
 *
 * RAII owners for the library's handles, exceptions for its status codes, and
 * std::vector buffers for the packed checkpoint tensors. Nothing here is compiled into
 * libgptq.so: this header only calls the C API, so it adds no ABI of its own and works
 * with any libgptq.so.0 that provides the functions it uses.
 *
 *     #include <gptq/gptq.hpp>
 *
 *     gptq::Context ctx;                              // CPU backend, all cores
 *     gptq::Hessian h(ctx, in);
 *     h.add(x.data(), nsamples, seqlen);              // [nsamples * seqlen, in] float32
 *     gptq::Config cfg;                               // library defaults
 *     cfg.bits = 4;
 *     gptq::Result r = gptq::quantize_layer(ctx, w.data(), out, in, h, cfg);
 *     gptq::Packed p = r.pack(ctx);                   // qweight, qzeros, scales, g_idx
 *     std::vector<float> y = p.matmul(ctx, x.data(), batch);
 *
 * Errors: every failing call throws gptq::Error, whose what() is the context's message
 * (gptq_ctx_last_error) and status() the gptq_status code.
 *
 * Lifetimes follow the C API: a Context must outlive the objects made with it (declare
 * it first), and the pointers a Result hands out stay valid while the Result lives.
 * Objects are movable, not copyable. Thread safety as in gptq.h: one context, and what
 * is made with it, on one thread at a time.
 */
#ifndef GPTQ_GPTQ_HPP
#define GPTQ_GPTQ_HPP

#include <gptq/gptq.h>
#include <gptq/model.h>

#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace gptq {

/** A failed libgptq call: status() is the gptq_status code, what() its message. */
class Error : public std::runtime_error {
public:
    Error(int status, const std::string &message)
        : std::runtime_error(message.empty() ? std::string(gptq_strerror(status)) : message),
          status_(status)
    {
    }
    int status() const noexcept { return status_; }

private:
    int status_;
};

namespace detail {

template <typename T, void (*Free)(T *)> struct Deleter {
    void operator()(T *p) const noexcept { Free(p); }
};
template <typename T, void (*Free)(T *)> using Owned = std::unique_ptr<T, Deleter<T, Free>>;

inline void check(int status, const gptq_ctx *ctx)
{
    if (status != GPTQ_OK)
        throw Error(status, ctx != nullptr ? gptq_ctx_last_error(ctx) : "");
}

inline std::size_t count(int64_t a, int64_t b = 1)
{
    return static_cast<std::size_t>(a) * static_cast<std::size_t>(b);
}

} // namespace detail

/** A contiguous read-only run of elements owned by the library (no copy). */
template <typename T> struct View {
    const T *data;
    std::size_t size;
    const T *begin() const noexcept { return data; }
    const T *end() const noexcept { return data + size; }
    const T &operator[](std::size_t i) const noexcept { return data[i]; }
};

/** Context options with the library's defaults (gptq_ctx_options_init). */
struct ContextOptions : gptq_ctx_options {
    ContextOptions() : gptq_ctx_options() { gptq_ctx_options_init(this); }
};

/** A context: backend, threads, log sink and the last error of its calls. */
class Context {
public:
    explicit Context(const gptq_ctx_options &opts = ContextOptions())
    {
        char msg[512] = {0};
        gptq_ctx *raw = nullptr;
        int status = gptq_ctx_create(&opts, &raw, msg, sizeof msg);
        if (status != GPTQ_OK)
            throw Error(status, msg);
        p_.reset(raw);
    }
    /** A context on the CPU backend with `threads` worker threads (0 = all cores). */
    static Context with_threads(int32_t threads)
    {
        ContextOptions o;
        o.threads = threads;
        return Context(o);
    }

    gptq_ctx *get() const noexcept { return p_.get(); }
    std::string last_error() const { return gptq_ctx_last_error(p_.get()); }
    const char *backend() const { return gptq_backend_name(gptq_ctx_backend(p_.get())); }
    /** Throw gptq::Error with this context's message unless status is GPTQ_OK. */
    void check(int status) const { detail::check(status, p_.get()); }

private:
    detail::Owned<gptq_ctx, gptq_ctx_free> p_;
};

/** The Hessian accumulator H = 2/n * sum X_s^T X_s (gptq_hessian_add). */
class Hessian {
public:
    Hessian(const Context &ctx, int64_t in_features) : ctx_(ctx.get())
    {
        gptq_hessian *raw = nullptr;
        ctx.check(gptq_hessian_create(ctx_, in_features, &raw));
        p_.reset(raw);
    }
    /** An accumulator starting from `h` ([in, in], symmetric, copied) standing for
     * `nsamples` samples (gptq_hessian_create_from). */
    Hessian(const Context &ctx, int64_t in_features, const float *h, int64_t nsamples)
        : ctx_(ctx.get())
    {
        gptq_hessian *raw = nullptr;
        ctx.check(gptq_hessian_create_from(ctx_, in_features, h, nsamples, &raw));
        p_.reset(raw);
    }
    /** Add `nsamples` sequences of `seqlen` rows: x is [nsamples * seqlen, in]. */
    void add(const float *x, int64_t nsamples, int64_t seqlen)
    {
        detail::check(gptq_hessian_add(ctx_, p_.get(), x, nsamples, seqlen), ctx_);
    }
    void merge(const Hessian &other)
    {
        detail::check(gptq_hessian_merge(ctx_, p_.get(), other.get()), ctx_);
    }
    int64_t in_features() const { return gptq_hessian_in_features(p_.get()); }
    int64_t nsamples() const { return gptq_hessian_nsamples(p_.get()); }
    std::vector<float> read() const
    {
        std::vector<float> h(detail::count(in_features(), in_features()));
        detail::check(gptq_hessian_read(ctx_, p_.get(), h.data(), h.size()), ctx_);
        return h;
    }
    const gptq_hessian *get() const noexcept { return p_.get(); }

private:
    gptq_ctx *ctx_;
    detail::Owned<gptq_hessian, gptq_hessian_free> p_;
};

/** A layer configuration with the library's defaults (gptq_config_init). */
struct Config : gptq_config {
    Config() : gptq_config() { gptq_config_init(this); }
};

/** A layer's checkpoint tensors, owned in vectors; sized by gptq_packed_shape. */
struct Packed {
    int32_t bits = 0, format = GPTQ_FORMAT_V1;
    int64_t out_features = 0, in_features = 0, ngroups = 0;
    int64_t qweight_shape[2] = {0, 0}, qzeros_shape[2] = {0, 0};
    std::vector<int32_t> qweight, qzeros, g_idx;
    std::vector<uint16_t> scales; /* IEEE float16 bit patterns, [ngroups, out] */

    Packed() = default;
    Packed(int32_t bits_, int32_t format_, int64_t out, int64_t in, int64_t ng)
        : bits(bits_), format(format_), out_features(out), in_features(in), ngroups(ng)
    {
        detail::check(gptq_packed_shape(bits, out, in, ng, qweight_shape, qzeros_shape),
                      nullptr);
        qweight.resize(detail::count(qweight_shape[0], qweight_shape[1]));
        qzeros.resize(detail::count(qzeros_shape[0], qzeros_shape[1]));
        scales.resize(detail::count(ng, out));
        g_idx.resize(detail::count(in));
    }

    /** The C view of these buffers (valid while this object is unchanged). */
    gptq_packed c_view()
    {
        gptq_packed p;
        p.bits = bits;
        p.format = format;
        p.out_features = out_features;
        p.in_features = in_features;
        p.ngroups = ngroups;
        p.qweight = qweight.data();
        p.qzeros = qzeros.data();
        p.scales = scales.data();
        p.g_idx = g_idx.data();
        return p;
    }

    /** y[batch, out] = x[batch, in] * Wq^T (+ bias[out]), from the packed tensors. */
    std::vector<float> matmul(const Context &ctx, const float *x, int64_t batch,
                              const float *bias = nullptr)
    {
        std::vector<float> y(detail::count(batch, out_features));
        gptq_packed p = c_view();
        ctx.check(gptq_dequant_matmul(ctx.get(), &p, x, batch, bias, y.data()));
        return y;
    }
};

/** A layer's quantized tensors, unpacked into vectors. */
struct Unpacked {
    int32_t bits = 0;
    int64_t out_features = 0, in_features = 0, ngroups = 0;
    std::vector<int32_t> codes, zeros, g_idx;
    std::vector<float> scales;
};

/** Unpack checkpoint tensors (gptq_unpack). */
inline Unpacked unpack(const Context &ctx, Packed &src, int32_t mode = GPTQ_PACK_CLEAN)
{
    Unpacked u;
    u.bits = src.bits;
    u.out_features = src.out_features;
    u.in_features = src.in_features;
    u.ngroups = src.ngroups;
    u.codes.resize(detail::count(u.out_features, u.in_features));
    u.zeros.resize(detail::count(u.ngroups, u.out_features));
    u.scales.resize(u.zeros.size());
    u.g_idx.resize(detail::count(u.in_features));
    gptq_unpacked dst = gptq_unpacked();
    dst.bits = u.bits;
    dst.out_features = u.out_features;
    dst.in_features = u.in_features;
    dst.ngroups = u.ngroups;
    dst.codes = u.codes.data();
    dst.scales = u.scales.data();
    dst.zeros = u.zeros.data();
    dst.g_idx = u.g_idx.data();
    gptq_packed p = src.c_view();
    ctx.check(gptq_unpack(ctx.get(), &p, mode, &dst));
    return u;
}

/** A quantized layer. The views point into the result and live as long as it. */
class Result {
public:
    explicit Result(gptq_result *raw) : p_(raw) {}

    int64_t out_features() const { return gptq_result_out_features(p_.get()); }
    int64_t in_features() const { return gptq_result_in_features(p_.get()); }
    int64_t ngroups() const { return gptq_result_ngroups(p_.get()); }
    Config config() const
    {
        Config c;
        detail::check(gptq_result_config(p_.get(), &c), nullptr);
        return c;
    }
    View<int32_t> codes() const { return {gptq_result_codes(p_.get()), rc()}; }
    View<float> q() const { return {gptq_result_q(p_.get()), rc()}; }
    View<float> scales() const { return {gptq_result_scales(p_.get()), gr()}; }
    View<int32_t> zeros() const { return {gptq_result_zeros(p_.get()), gr()}; }
    View<int32_t> g_idx() const { return {gptq_result_g_idx(p_.get()), cols()}; }
    View<int32_t> perm() const { return {gptq_result_perm(p_.get()), cols()}; }
    double loss() const { return gptq_result_loss(p_.get()); }
    double damp_percent() const { return gptq_result_damp_percent(p_.get()); }
    int64_t dead_columns() const { return gptq_result_dead_columns(p_.get()); }

    /** The checkpoint tensors: format GPTQ_FORMAT_V1/V2, mode GPTQ_PACK_*. */
    Packed pack(const Context &ctx, int32_t format = GPTQ_FORMAT_V1,
                int32_t mode = GPTQ_PACK_CLEAN) const
    {
        Packed p(config().bits, format, out_features(), in_features(), ngroups());
        gptq_packed c = p.c_view();
        ctx.check(gptq_pack_result(ctx.get(), p_.get(), mode, &c));
        return p;
    }
    const gptq_result *get() const noexcept { return p_.get(); }

private:
    std::size_t rc() const { return detail::count(out_features(), in_features()); }
    std::size_t gr() const { return detail::count(ngroups(), out_features()); }
    std::size_t cols() const { return detail::count(in_features()); }
    detail::Owned<gptq_result, gptq_result_free> p_;
};

/** Quantize one linear layer, w [out, in] float32 (gptq_layer_quantize). `hessian`
 * may be null only with cfg.rtn = 1. */
inline Result quantize_layer(const Context &ctx, const float *w, int64_t out_features,
                             int64_t in_features, const Hessian *hessian,
                             const gptq_config &cfg = Config())
{
    gptq_result *raw = nullptr;
    ctx.check(gptq_layer_quantize(ctx.get(), w, out_features, in_features,
                                  hessian != nullptr ? hessian->get() : nullptr, &cfg, &raw));
    return Result(raw);
}

inline Result quantize_layer(const Context &ctx, const float *w, int64_t out_features,
                             int64_t in_features, const Hessian &hessian,
                             const gptq_config &cfg = Config())
{
    return quantize_layer(ctx, w, out_features, in_features, &hessian, cfg);
}

/** Token data (gptq_tokens). */
class Tokens {
public:
    /** Load a file; kind GPTQ_TOKENS_AUTO, _BYTES or _IDS. */
    static Tokens load(const Context &ctx, const std::string &path,
                       int32_t kind = GPTQ_TOKENS_AUTO)
    {
        gptq_tokens *raw = nullptr;
        ctx.check(gptq_tokens_load(ctx.get(), path.c_str(), kind, &raw));
        return Tokens(raw);
    }
    /** One sequence of ids (copied). */
    static Tokens from_ids(const Context &ctx, const std::vector<int32_t> &ids)
    {
        gptq_tokens *raw = nullptr;
        ctx.check(gptq_tokens_from_ids(ctx.get(), ids.data(),
                                       static_cast<int64_t>(ids.size()), &raw));
        return Tokens(raw);
    }
    int64_t count() const { return gptq_tokens_count(p_.get()); }
    int64_t total() const { return gptq_tokens_total(p_.get()); }
    View<int32_t> sequence(int64_t i) const
    {
        int64_t n = 0;
        const int32_t *ids = gptq_tokens_sequence(p_.get(), i, &n);
        return {ids, detail::count(n)};
    }
    const gptq_tokens *get() const noexcept { return p_.get(); }

private:
    explicit Tokens(gptq_tokens *raw) : p_(raw) {}
    detail::Owned<gptq_tokens, gptq_tokens_free> p_;
};

/** Sequential-GPTQ options with the library's defaults (gptq_quantize_options_init). */
struct QuantizeOptions : gptq_quantize_options {
    QuantizeOptions() : gptq_quantize_options() { gptq_quantize_options_init(this); }
};

/** Save options with the library's defaults (gptq_save_options_init). */
struct SaveOptions : gptq_save_options {
    SaveOptions() : gptq_save_options() { gptq_save_options_init(this); }
};

/** Called after every quantized module and every layer; return false to cancel. */
using ProgressFn = std::function<bool(const gptq_progress &)>;

/** A Hugging Face Llama-family model directory, float or GPTQ (gptq_model). */
class Model {
public:
    Model(const Context &ctx, const std::string &dir) : ctx_(ctx.get())
    {
        gptq_model *raw = nullptr;
        ctx.check(gptq_model_open(ctx_, dir.c_str(), &raw));
        p_.reset(raw);
    }

    std::string architecture() const { return gptq_model_architecture(p_.get()); }
    int64_t num_layers() const { return gptq_model_num_layers(p_.get()); }
    int64_t hidden_size() const { return gptq_model_hidden_size(p_.get()); }
    int64_t vocab_size() const { return gptq_model_vocab_size(p_.get()); }
    bool is_quantized() const { return gptq_model_is_quantized(p_.get()) != 0; }

    /** Sequential GPTQ (gptq_model_quantize). An exception thrown by `progress`
     * cancels the run and is rethrown here; returning false cancels with
     * gptq::Error(GPTQ_ERR_CANCELLED). opts.progress is replaced when progress is set. */
    void quantize(const Tokens &calib, QuantizeOptions opts = QuantizeOptions(),
                  ProgressFn progress = ProgressFn())
    {
        Trampoline t{&progress, nullptr};
        if (progress) {
            opts.progress = &Trampoline::call;
            opts.progress_user = &t;
        }
        int status = gptq_model_quantize(ctx_, p_.get(), calib.get(), &opts);
        if (t.error)
            std::rethrow_exception(t.error);
        detail::check(status, ctx_);
    }

    void save(const std::string &dir, const gptq_save_options &opts = SaveOptions())
    {
        detail::check(gptq_model_save(ctx_, p_.get(), dir.c_str(), &opts), ctx_);
    }

    void save_dequantized(const std::string &dir, bool force = false)
    {
        detail::check(gptq_model_save_dequantized(ctx_, p_.get(), dir.c_str(), force ? 1 : 0),
                      ctx_);
    }

    /** Perplexity in non-overlapping windows of `seqlen` tokens (gptq_model_eval). */
    gptq_eval_result eval(const Tokens &text, int64_t seqlen)
    {
        gptq_eval_result r = gptq_eval_result();
        r.struct_size = sizeof r;
        detail::check(gptq_model_eval(ctx_, p_.get(), text.get(), seqlen, &r), ctx_);
        return r;
    }
    const gptq_model *get() const noexcept { return p_.get(); }

private:
    struct Trampoline {
        ProgressFn *fn;
        std::exception_ptr error;
        /* No exception may cross the C library's frames: keep it, cancel, rethrow. */
        static int call(void *user, const gptq_progress *p)
        {
            Trampoline *t = static_cast<Trampoline *>(user);
            try {
                return (*t->fn)(*p) ? 0 : 1;
            } catch (...) {
                t->error = std::current_exception();
                return 1;
            }
        }
    };

    gptq_ctx *ctx_;
    detail::Owned<gptq_model, gptq_model_free> p_;
};

} // namespace gptq

#endif /* GPTQ_GPTQ_HPP */
