// Command quantize_model quantizes one linear layer and a whole model with libgptq
// from Go.
//
//	go run ./examples/quantize_model [MODEL_DIR [OUT_DIR]]
//
// MODEL_DIR defaults to the bundled models/tiny-llama-bytes (relative to
// bindings/go); its calib.txt gives 8 calibration windows of 64 bytes, eval.txt the
// perplexity before and after (32 windows of 256). OUT_DIR receives the checkpoint.
package main

import (
	"fmt"
	"os"
	"path/filepath"

	gptq "github.com/libgptq/libgptq/bindings/go"
)

func layer(ctx *gptq.Context) error {
	const out, in = 128, 256
	state := uint32(1)
	next := func() float32 {
		state = state*1664525 + 1013904223
		return float32(state>>8)/8388608 - 1
	}
	w := make([]float32, out*in)
	for i := range w {
		w[i] = 0.05 * next()
	}
	x := make([]float32, 8*32*in)
	for i := range x {
		x[i] = next()
	}
	h, err := ctx.NewHessian(in)
	if err != nil {
		return err
	}
	defer h.Close()
	if err := h.Add(x, 8, 32); err != nil {
		return err
	}
	cfg := gptq.DefaultConfig()
	cfg.GroupSize = 64
	r, err := gptq.QuantizeLayer(ctx, w, out, in, h, cfg)
	if err != nil {
		return err
	}
	defer r.Close()
	p, err := r.Pack(gptq.FormatV1, gptq.PackClean)
	if err != nil {
		return err
	}
	y, err := p.Matmul(ctx, x[:in], 1, nil)
	if err != nil {
		return err
	}
	fmt.Printf("layer %dx%d: loss %.4g, qweight %v, qzeros %v, y[0] %.4f\n",
		out, in, r.Loss(), p.QWeightShape, p.QZerosShape, y[0])
	return nil
}

func run(dir, outDir string) error {
	ctx, err := gptq.NewContext(nil)
	if err != nil {
		return err
	}
	defer ctx.Close()
	fmt.Println("libgptq", gptq.Version())
	if err := layer(ctx); err != nil {
		return err
	}

	m, err := ctx.OpenModel(dir)
	if err != nil {
		return err
	}
	defer m.Close()
	all, err := ctx.LoadTokens(filepath.Join(dir, "eval.txt"), gptq.TokensBytes)
	if err != nil {
		return err
	}
	defer all.Close()
	seq := all.Sequence(0)
	if len(seq) > 32*256 {
		seq = seq[:32*256]
	}
	text, err := ctx.TokensFromIDs(seq)
	if err != nil {
		return err
	}
	defer text.Close()
	before, err := m.Eval(text, 256)
	if err != nil {
		return err
	}

	calib, err := ctx.LoadTokens(filepath.Join(dir, "calib.txt"), gptq.TokensAuto)
	if err != nil {
		return err
	}
	defer calib.Close()
	opts := gptq.DefaultQuantizeOptions()
	opts.NSamples, opts.SeqLen = 8, 64
	err = m.Quantize(calib, opts, func(p gptq.Progress) bool {
		if p.Module == "" {
			fmt.Printf("layer %d/%d done  %.2fs\n", p.Layer+1, p.NumLayers, p.Elapsed)
		}
		return true
	})
	if err != nil {
		return err
	}
	after, err := m.Eval(text, 256)
	if err != nil {
		return err
	}
	if outDir != "" {
		so := gptq.DefaultSaveOptions()
		so.Force = true
		if err := m.Save(outDir, so); err != nil {
			return err
		}
		fmt.Println("saved", outDir)
	}
	fmt.Printf("model %s: ppl before %.4f after %.4f\n", m.Architecture(), before.PPL, after.PPL)
	return nil
}

func main() {
	dir := filepath.Join("..", "..", "models", "tiny-llama-bytes")
	outDir := ""
	if len(os.Args) > 1 {
		dir = os.Args[1]
	}
	if len(os.Args) > 2 {
		outDir = os.Args[2]
	}
	if err := run(dir, outDir); err != nil {
		fmt.Fprintln(os.Stderr, "quantize_model:", err)
		os.Exit(1)
	}
}
