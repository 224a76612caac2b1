package gptq

import (
	"errors"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"testing"
)

const out, in = 64, 256

// lcg is Numerical Recipes' generator: the same data on every platform, in [-1, 1).
type lcg uint32

func (g *lcg) fill(n int, scale float32) []float32 {
	v := make([]float32, n)
	for i := range v {
		*g = *g*1664525 + 1013904223
		v[i] = scale * (float32(uint32(*g)>>8)/8388608 - 1)
	}
	return v
}

func layerData() (w, x []float32) {
	g := lcg(3)
	return g.fill(out*in, 0.05), g.fill(8*32*in, 1)
}

func newCtx(t *testing.T) *Context {
	t.Helper()
	ctx, err := NewContext(nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ctx.Close() })
	return ctx
}

func tiny() string { return filepath.Join("..", "..", "models", "tiny-llama-bytes") }

func TestHessianAndMerge(t *testing.T) {
	ctx := newCtx(t)
	_, x := layerData()
	whole, _ := ctx.NewHessian(in)
	defer whole.Close()
	if err := whole.Add(x, 8, 32); err != nil {
		t.Fatal(err)
	}
	a, _ := ctx.NewHessian(in)
	b, _ := ctx.NewHessian(in)
	half := len(x) / 2
	if err := a.Add(x[:half], 4, 32); err != nil {
		t.Fatal(err)
	}
	if err := b.Add(x[half:], 4, 32); err != nil {
		t.Fatal(err)
	}
	if err := a.Merge(b); err != nil {
		t.Fatal(err)
	}
	if a.NSamples() != 8 || a.InFeatures() != in {
		t.Fatalf("merged: %d samples, %d features", a.NSamples(), a.InFeatures())
	}
	ha, _ := a.Read()
	hw, _ := whole.Read()
	for i := range hw {
		if d := math.Abs(float64(ha[i] - hw[i])); d > 1e-4*(1+math.Abs(float64(hw[i]))) {
			t.Fatalf("H[%d]: merged %g, whole %g", i, ha[i], hw[i])
		}
	}
	if err := a.Add(x[:10], 8, 32); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("short x: %v", err)
	}
}

func TestQuantizePackUnpackMatmul(t *testing.T) {
	ctx := newCtx(t)
	w, x := layerData()
	h, _ := ctx.NewHessian(in)
	h.Add(x, 8, 32)
	cfg := DefaultConfig()
	if cfg.Bits != 4 || cfg.GroupSize != 128 || !cfg.Sym {
		t.Fatalf("defaults: %+v", cfg)
	}
	cfg.GroupSize = 64
	cfg.DescAct = true
	r, err := QuantizeLayer(ctx, w, out, in, h, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if r.NGroups() != 4 || !r.Config().DescAct || r.Loss() <= 0 {
		t.Fatalf("result: %d groups, %+v, loss %g", r.NGroups(), r.Config(), r.Loss())
	}
	codes, scales, zeros, gidx, q := r.Codes(), r.Scales(), r.Zeros(), r.GIdx(), r.Q()
	for row := 0; row < out; row++ {
		for col := 0; col < in; col++ {
			g := int(gidx[col])*out + row
			want := scales[g] * float32(codes[row*in+col]-zeros[g])
			if d := math.Abs(float64(q[row*in+col] - want)); d > 1e-6 {
				t.Fatalf("Q[%d,%d] = %g, scale*(code-zero) = %g", row, col, q[row*in+col], want)
			}
		}
	}
	perm := append([]int32(nil), r.Perm()...)
	sort.Slice(perm, func(i, j int) bool { return perm[i] < perm[j] })
	for i, v := range perm {
		if int(v) != i {
			t.Fatal("perm is not a permutation")
		}
	}

	for _, f := range []Format{FormatV1, FormatV2} {
		p, err := r.Pack(f, PackClean)
		if err != nil {
			t.Fatal(err)
		}
		if p.QWeightShape != [2]int{in * 4 / 32, out} || p.QZerosShape != [2]int{4, out * 4 / 32} {
			t.Fatalf("shapes %v %v", p.QWeightShape, p.QZerosShape)
		}
		u, err := p.Unpack(ctx, PackClean)
		if err != nil {
			t.Fatal(err)
		}
		for i := range codes {
			if u.Codes[i] != codes[i] {
				t.Fatalf("format %d: code %d unpacked as %d, packed %d", f, i, u.Codes[i], codes[i])
			}
		}
		again, err := u.Pack(ctx, f, PackClean)
		if err != nil {
			t.Fatal(err)
		}
		for i := range p.QWeight {
			if again.QWeight[i] != p.QWeight[i] {
				t.Fatal("repacked qweight differs")
			}
		}
	}

	p, _ := r.Pack(FormatV1, PackClean)
	y, err := p.Matmul(ctx, x[:2*in], 2, nil)
	if err != nil {
		t.Fatal(err)
	}
	for b := 0; b < 2; b++ {
		for o := 0; o < out; o++ {
			var exact, mag float64
			for j := 0; j < in; j++ {
				v := float64(x[b*in+j]) * float64(q[o*in+j])
				exact += v
				mag += math.Abs(v)
			}
			if d := math.Abs(float64(y[b*out+o]) - exact); d > mag/1024+1e-5 {
				t.Fatalf("y[%d,%d] off by %g", b, o, d)
			}
		}
	}
}

func TestErrors(t *testing.T) {
	ctx := newCtx(t)
	w, x := layerData()
	h, _ := ctx.NewHessian(in)
	h.Add(x, 8, 32)
	_, err := QuantizeLayer(ctx, w[:out*128], out, 128, h, DefaultConfig())
	var e *Error
	if !errors.As(err, &e) || !errors.Is(err, ErrShape) {
		t.Fatalf("want a shape error, got %v", err)
	}
	if !strings.Contains(e.Message, "Hessian") || ctx.LastError() != e.Message {
		t.Fatalf("message %q, context %q", e.Message, ctx.LastError())
	}
	cfg := DefaultConfig()
	cfg.Bits = 5
	if _, err := QuantizeLayer(ctx, w, out, in, h, cfg); !errors.Is(err, ErrNotSupported) {
		t.Fatalf("bits 5: %v", err)
	}
	if _, err := ctx.OpenModel("/nonexistent/model"); !errors.Is(err, ErrNotFound) ||
		!strings.Contains(err.Error(), "/nonexistent/model") {
		t.Fatalf("missing model: %v", err)
	}
}

func TestCloseOrder(t *testing.T) {
	ctx, err := NewContext(&ContextOptions{Backend: BackendCPU, Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	if ctx.Backend() != BackendCPU || ctx.Backend().String() != "cpu" {
		t.Fatalf("backend %v", ctx.Backend())
	}
	h, _ := ctx.NewHessian(16)
	ctx.Close() // deferred: h is still open
	if _, err := ctx.NewHessian(16); !errors.Is(err, ErrClosed) {
		t.Fatalf("new object on a closed context: %v", err)
	}
	if err := h.Add(make([]float32, 4*16), 1, 4); err != nil {
		t.Fatalf("an open object of a closed context: %v", err)
	}
	h.Close()
	h.Close()
	ctx.Close()
	// Objects left to the garbage collector are freed by their finalizers.
	ctx2, _ := NewContext(nil)
	for i := 0; i < 10; i++ {
		ctx2.NewHessian(64)
	}
	ctx2 = nil
	runtime.GC()
	runtime.GC()
}

func TestLogSink(t *testing.T) {
	var lines []string
	ctx, err := NewContext(&ContextOptions{
		Backend: BackendCPU, LogLevel: LogInfo,
		Log: func(level LogLevel, msg string) {
			if level == LogWarn {
				lines = append(lines, msg)
			}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer ctx.Close()
	// Positive definite only once damp_percent > 0.015: the first Cholesky fails and
	// the library retries with more damping, with a warning.
	const n = 64
	h := make([]float32, n*n)
	for i := 0; i < n; i++ {
		h[i*n+i] = 1
	}
	h[1], h[n] = 1.015, 1.015
	hess, err := ctx.NewHessianFromMatrix(n, h, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer hess.Close()
	g := lcg(5)
	cfg := DefaultConfig()
	cfg.GroupSize = -1
	if _, err := QuantizeLayer(ctx, g.fill(32*n, 0.1), 32, n, hess, cfg); err != nil {
		t.Fatal(err)
	}
	found := false
	for _, l := range lines {
		found = found || strings.Contains(l, "Cholesky")
	}
	if !found {
		t.Fatalf("no damping warning among %q", lines)
	}
}

func TestModel(t *testing.T) {
	ctx := newCtx(t)
	m, err := ctx.OpenModel(tiny())
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if m.Architecture() != "LlamaForCausalLM" || m.NumLayers() != 4 || m.VocabSize() != 256 || m.IsQuantized() {
		t.Fatalf("model %s %d %d %v", m.Architecture(), m.NumLayers(), m.VocabSize(), m.IsQuantized())
	}
	all, err := ctx.LoadTokens(filepath.Join(tiny(), "eval.txt"), TokensBytes)
	if err != nil {
		t.Fatal(err)
	}
	text, _ := ctx.TokensFromIDs(all.Sequence(0)[:16*256])
	before, err := m.Eval(text, 256)
	if err != nil || before.Windows != 16 || before.Tokens != 16*255 {
		t.Fatalf("eval: %+v %v", before, err)
	}

	calib, _ := ctx.LoadTokens(filepath.Join(tiny(), "calib.txt"), TokensAuto)
	opts := DefaultQuantizeOptions()
	if opts.NSamples != 128 || opts.SeqLen != 2048 || !opts.TrueSequential {
		t.Fatalf("defaults %+v", opts)
	}
	opts.NSamples, opts.SeqLen = 8, 64
	calls := 0
	err = m.Quantize(calib, opts, func(p Progress) bool { calls++; return calls < 2 })
	if !errors.Is(err, ErrCancelled) || m.IsQuantized() {
		t.Fatalf("cancel: %v", err)
	}

	var modules []Progress
	err = m.Quantize(calib, opts, func(p Progress) bool {
		if p.Module != "" {
			modules = append(modules, p)
		}
		return true
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(modules) != 28 || modules[0].Module != "self_attn.q_proj" || modules[27].NumSteps != 28 {
		t.Fatalf("%d progress calls, first %+v", len(modules), modules[0])
	}

	dir := filepath.Join(t.TempDir(), "gptq")
	so := DefaultSaveOptions()
	if err := m.Save(dir, so); err != nil {
		t.Fatal(err)
	}
	if err := m.Save(dir, so); err == nil {
		t.Fatal("saving over an existing directory without Force succeeded")
	}
	if _, err := os.Stat(filepath.Join(dir, "config.json")); err != nil {
		t.Fatal(err)
	}
	q, err := ctx.OpenModel(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	after, err := q.Eval(text, 256)
	if err != nil || !q.IsQuantized() {
		t.Fatal(err)
	}
	if after.PPL > before.PPL*1.01 || before.PPL > after.PPL*1.01 {
		t.Fatalf("ppl before %g after %g", before.PPL, after.PPL)
	}
}

func TestPanicInProgress(t *testing.T) {
	ctx := newCtx(t)
	m, _ := ctx.OpenModel(tiny())
	defer m.Close()
	calib, _ := ctx.LoadTokens(filepath.Join(tiny(), "calib.txt"), TokensBytes)
	opts := DefaultQuantizeOptions()
	opts.NSamples, opts.SeqLen = 8, 64
	defer func() {
		if r := recover(); r != "stop" {
			t.Fatalf("recovered %v", r)
		}
		if m.IsQuantized() {
			t.Fatal("quantized after a panic")
		}
	}()
	m.Quantize(calib, opts, func(Progress) bool { panic("stop") })
}

func TestHelpers(t *testing.T) {
	if FP32ToFP16(1) != 0x3c00 || FP16ToFP32(0xc000) != -2 {
		t.Fatal("float16 helpers")
	}
	if qw, qz, err := PackedShape(3, 32, 32, 1); err != nil || qw != [2]int{3, 32} || qz != [2]int{1, 3} {
		t.Fatalf("packed shape %v %v %v", qw, qz, err)
	}
	if !strings.HasPrefix(Version(), "0.") || BackendAvailable(BackendCPU) != nil {
		t.Fatal("version or CPU backend")
	}
}
