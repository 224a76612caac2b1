package gptq

// #include <stdlib.h>
// #include <gptq/model.h>
// #include "helpers.h"
import "C"

import (
	"runtime"
	"runtime/cgo"
	"unsafe"
)

// TokenKind says how a token file is read.
type TokenKind int32

const (
	TokensAuto  TokenKind = C.GPTQ_TOKENS_AUTO  // JSON or safetensors ids by content, else bytes
	TokensBytes TokenKind = C.GPTQ_TOKENS_BYTES // the file's bytes are the tokens
	TokensIDs   TokenKind = C.GPTQ_TOKENS_IDS   // JSON array(s) of ids, or safetensors I32/I64
)

// Tokens are one or more sequences of token ids (gptq_tokens).
type Tokens struct {
	ctx *Context
	p   *C.gptq_tokens
}

func (c *Context) newTokens(p *C.gptq_tokens) *Tokens {
	t := &Tokens{ctx: c, p: p}
	c.adopt()
	runtime.SetFinalizer(t, (*Tokens).Close)
	return t
}

// LoadTokens reads token data from a file.
func (c *Context) LoadTokens(path string, kind TokenKind) (*Tokens, error) {
	if !c.usable() {
		return nil, ErrClosed
	}
	cpath := C.CString(path)
	defer C.free(unsafe.Pointer(cpath))
	var p *C.gptq_tokens
	if err := c.check(C.gptq_tokens_load(c.p, cpath, C.int32_t(kind), &p)); err != nil {
		return nil, err
	}
	return c.newTokens(p), nil
}

// TokensFromIDs makes one sequence from ids (copied).
func (c *Context) TokensFromIDs(ids []int32) (*Tokens, error) {
	if !c.usable() {
		return nil, ErrClosed
	}
	var p *C.gptq_tokens
	if err := c.check(C.gptq_tokens_from_ids(c.p, i32p(ids), C.int64_t(len(ids)), &p)); err != nil {
		return nil, err
	}
	return c.newTokens(p), nil
}

// Close frees the tokens; safe to call more than once.
func (t *Tokens) Close() error {
	if t.p != nil {
		C.gptq_tokens_free(t.p)
		t.p = nil
		t.ctx.release()
		runtime.SetFinalizer(t, nil)
	}
	return nil
}

// Len is the number of sequences.
func (t *Tokens) Len() int { return int(C.gptq_tokens_count(t.p)) }

// Total is the number of tokens over all sequences.
func (t *Tokens) Total() int { return int(C.gptq_tokens_total(t.p)) }

// Sequence returns a copy of sequence i (nil when out of range).
func (t *Tokens) Sequence(i int) []int32 {
	defer runtime.KeepAlive(t)
	var n C.int64_t
	p := C.gptq_tokens_sequence(t.p, C.int64_t(i), &n)
	if p == nil {
		return nil
	}
	return copyI32(p, int(n))
}

// Model is a Hugging Face model directory, float or GPTQ (gptq_model).
type Model struct {
	ctx *Context
	p   *C.gptq_model
}

// OpenModel opens and validates a model directory.
func (c *Context) OpenModel(dir string) (*Model, error) {
	if !c.usable() {
		return nil, ErrClosed
	}
	cdir := C.CString(dir)
	defer C.free(unsafe.Pointer(cdir))
	var p *C.gptq_model
	if err := c.check(C.gptq_model_open(c.p, cdir, &p)); err != nil {
		return nil, err
	}
	m := &Model{ctx: c, p: p}
	c.adopt()
	runtime.SetFinalizer(m, (*Model).Close)
	return m, nil
}

// Close frees the model; safe to call more than once.
func (m *Model) Close() error {
	if m.p != nil {
		C.gptq_model_free(m.p)
		m.p = nil
		m.ctx.release()
		runtime.SetFinalizer(m, nil)
	}
	return nil
}

func (m *Model) Architecture() string { return C.GoString(C.gptq_model_architecture(m.p)) }
func (m *Model) NumLayers() int       { return int(C.gptq_model_num_layers(m.p)) }
func (m *Model) HiddenSize() int      { return int(C.gptq_model_hidden_size(m.p)) }
func (m *Model) VocabSize() int       { return int(C.gptq_model_vocab_size(m.p)) }
func (m *Model) IsQuantized() bool    { return C.gptq_model_is_quantized(m.p) != 0 }

// Progress is what the progress callback of Quantize sees: once per quantized module
// and once at each layer's end (Module == "").
type Progress struct {
	Layer, NumLayers int // Layer is 0-based
	Module           string
	Step, NumSteps   int // modules done so far over all layers
	Loss             float64
	DampPercent      float64
	Seconds, Elapsed float64
}

// QuantizeOptions are the options of Quantize; DefaultQuantizeOptions gives the
// library's defaults.
type QuantizeOptions struct {
	Config         Config
	NSamples       int
	SeqLen         int
	Seed           uint64
	TrueSequential bool
}

// DefaultQuantizeOptions: 128 samples of 2048 tokens, seed 0, true-sequential, and the
// default layer configuration.
func DefaultQuantizeOptions() QuantizeOptions {
	var o C.gptq_quantize_options
	C.gptq_quantize_options_init(&o)
	return QuantizeOptions{
		Config: configFromC(&o.config), NSamples: int(o.nsamples), SeqLen: int(o.seqlen),
		Seed: uint64(o.seed), TrueSequential: o.true_sequential != 0,
	}
}

type progressState struct {
	fn    func(Progress) bool
	panic interface{}
}

//export gptqGoProgress
func gptqGoProgress(handle C.uintptr_t, p *C.gptq_progress) C.int {
	st := cgo.Handle(handle).Value().(*progressState)
	pr := Progress{
		Layer: int(p.layer), NumLayers: int(p.num_layers), Module: C.GoString(p.module),
		Step: int(p.step), NumSteps: int(p.num_steps), Loss: float64(p.loss),
		DampPercent: float64(p.damp_percent), Seconds: float64(p.seconds), Elapsed: float64(p.elapsed),
	}
	cancel := C.int(1)
	func() {
		// A panic must not unwind through the C library: keep it and cancel.
		defer func() {
			if e := recover(); e != nil {
				st.panic = e
			}
		}()
		if st.fn(pr) {
			cancel = 0
		}
	}()
	return cancel
}

// Quantize runs sequential GPTQ over every decoder-layer linear. progress (may be
// nil) is called after every module and layer; returning false cancels, and Quantize
// then returns an error matching ErrCancelled. A panic in progress cancels the run
// and is re-raised here.
func (m *Model) Quantize(calib *Tokens, opts QuantizeOptions, progress func(Progress) bool) error {
	if m.p == nil || calib.p == nil {
		return ErrClosed
	}
	var o C.gptq_quantize_options
	C.gptq_quantize_options_init(&o)
	opts.Config.fill(&o.config)
	o.nsamples = C.int64_t(opts.NSamples)
	o.seqlen = C.int64_t(opts.SeqLen)
	o.seed = C.uint64_t(opts.Seed)
	o.true_sequential = b32(opts.TrueSequential)
	var st *progressState
	if progress != nil {
		st = &progressState{fn: progress}
		h := cgo.NewHandle(st)
		defer h.Delete()
		C.gptq_go_set_progress(&o, C.uintptr_t(h))
	}
	err := m.ctx.check(C.gptq_model_quantize(m.ctx.p, m.p, calib.p, &o))
	runtime.KeepAlive(calib)
	if st != nil && st.panic != nil {
		panic(st.panic)
	}
	return err
}

// SaveOptions are the options of Save; DefaultSaveOptions gives the library's.
type SaveOptions struct {
	Format        Format
	PackMode      PackMode
	MaxShardBytes int64
	Force         bool // replace an existing directory
}

// DefaultSaveOptions: "gptq" v1, clean packing, 4 GiB shards, no overwrite.
func DefaultSaveOptions() SaveOptions {
	var o C.gptq_save_options
	C.gptq_save_options_init(&o)
	return SaveOptions{Format: Format(o.format), PackMode: PackMode(o.pack_mode),
		MaxShardBytes: int64(o.max_shard_bytes), Force: o.force != 0}
}

// Save writes the quantized model as a GPTQ checkpoint directory.
func (m *Model) Save(dir string, opts SaveOptions) error {
	if m.p == nil {
		return ErrClosed
	}
	var o C.gptq_save_options
	C.gptq_save_options_init(&o)
	o.format = C.int32_t(opts.Format)
	o.pack_mode = C.int32_t(opts.PackMode)
	o.max_shard_bytes = C.int64_t(opts.MaxShardBytes)
	o.force = b32(opts.Force)
	cdir := C.CString(dir)
	defer C.free(unsafe.Pointer(cdir))
	return m.ctx.check(C.gptq_model_save(m.ctx.p, m.p, cdir, &o))
}

// SaveDequantized writes a quantized model back as a float16 checkpoint.
func (m *Model) SaveDequantized(dir string, force bool) error {
	if m.p == nil {
		return ErrClosed
	}
	cdir := C.CString(dir)
	defer C.free(unsafe.Pointer(cdir))
	return m.ctx.check(C.gptq_model_save_dequantized(m.ctx.p, m.p, cdir, b32(force)))
}

// EvalResult is a perplexity and what it was computed over.
type EvalResult struct {
	PPL, NLL        float64
	Tokens, Windows int
	Seconds         float64
}

// Eval computes the perplexity on text in non-overlapping windows of seqlen tokens.
func (m *Model) Eval(text *Tokens, seqlen int) (EvalResult, error) {
	if m.p == nil || text.p == nil {
		return EvalResult{}, ErrClosed
	}
	var r C.gptq_eval_result
	r.struct_size = C.uint32_t(unsafe.Sizeof(r))
	err := m.ctx.check(C.gptq_model_eval(m.ctx.p, m.p, text.p, C.int64_t(seqlen), &r))
	runtime.KeepAlive(text)
	return EvalResult{PPL: float64(r.ppl), NLL: float64(r.nll), Tokens: int(r.tokens),
		Windows: int(r.windows), Seconds: float64(r.seconds)}, err
}
