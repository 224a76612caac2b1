package gptq

// #include <gptq/gptq.h>
// #include "helpers.h"
import "C"

import (
	"runtime"
	"unsafe"
)

// Config is the per-layer configuration (gptq_config).
type Config struct {
	Bits              int     // 2, 3, 4 or 8
	GroupSize         int     // columns per group, -1 for one group per row
	Sym               bool    // symmetric zero points
	DescAct           bool    // act-order: columns by descending diag(H)
	StaticGroups      bool    // group parameters fixed before GPTQ runs
	BlockSize         int     // lazy-batch block width
	RTN               bool    // plain round-to-nearest, no Hessian needed
	DampPercent       float64 // dampening, fraction of mean(diag(H))
	DampAutoIncrement float64 // added to DampPercent after a failed Cholesky
}

// DefaultConfig is the library's default configuration (4 bits, groups of 128, sym,
// damp 0.01).
func DefaultConfig() Config {
	var c C.gptq_config
	C.gptq_config_init(&c)
	return configFromC(&c)
}

func configFromC(c *C.gptq_config) Config {
	return Config{
		Bits: int(c.bits), GroupSize: int(c.group_size), Sym: c.sym != 0,
		DescAct: c.desc_act != 0, StaticGroups: c.static_groups != 0,
		BlockSize: int(c.block_size), RTN: c.rtn != 0,
		DampPercent: float64(c.damp_percent), DampAutoIncrement: float64(c.damp_auto_increment),
	}
}

func b32(b bool) C.int32_t {
	if b {
		return 1
	}
	return 0
}

// fill writes the configuration into a gptq_config set up by gptq_config_init, so
// fields this binding does not know keep the library's defaults.
func (cfg Config) fill(c *C.gptq_config) {
	c.bits = C.int32_t(cfg.Bits)
	c.group_size = C.int32_t(cfg.GroupSize)
	c.sym = b32(cfg.Sym)
	c.desc_act = b32(cfg.DescAct)
	c.static_groups = b32(cfg.StaticGroups)
	c.block_size = C.int32_t(cfg.BlockSize)
	c.rtn = b32(cfg.RTN)
	c.damp_percent = C.double(cfg.DampPercent)
	c.damp_auto_increment = C.double(cfg.DampAutoIncrement)
}

// Result is a quantized layer (gptq_result). Its getters return copies.
type Result struct {
	ctx *Context
	p   *C.gptq_result
}

// QuantizeLayer quantizes one linear layer: w is [out, in] float32 (nn.Linear
// layout); h the Hessian of its inputs (nil only with cfg.RTN).
func QuantizeLayer(ctx *Context, w []float32, out, in int, h *Hessian, cfg Config) (*Result, error) {
	if !ctx.usable() || (h != nil && h.p == nil) {
		return nil, ErrClosed
	}
	if err := wantLen("w", len(w), out, in); err != nil {
		return nil, err
	}
	var c C.gptq_config
	C.gptq_config_init(&c)
	cfg.fill(&c)
	var hp *C.gptq_hessian
	if h != nil {
		hp = h.p
	}
	var p *C.gptq_result
	err := ctx.check(C.gptq_layer_quantize(ctx.p, f32p(w), C.int64_t(out), C.int64_t(in), hp, &c, &p))
	runtime.KeepAlive(w)
	runtime.KeepAlive(h)
	if err != nil {
		return nil, err
	}
	r := &Result{ctx: ctx, p: p}
	ctx.adopt()
	runtime.SetFinalizer(r, (*Result).Close)
	return r, nil
}

// Close frees the result; safe to call more than once.
func (r *Result) Close() error {
	if r.p != nil {
		C.gptq_result_free(r.p)
		r.p = nil
		r.ctx.release()
		runtime.SetFinalizer(r, nil)
	}
	return nil
}

func (r *Result) OutFeatures() int { return int(C.gptq_result_out_features(r.p)) }
func (r *Result) InFeatures() int  { return int(C.gptq_result_in_features(r.p)) }
func (r *Result) NGroups() int     { return int(C.gptq_result_ngroups(r.p)) }
func (r *Result) Loss() float64    { return float64(C.gptq_result_loss(r.p)) }

// DampPercent is the damp actually used (raised after failed Cholesky attempts).
func (r *Result) DampPercent() float64 { return float64(C.gptq_result_damp_percent(r.p)) }

// Config is the configuration the layer was quantized with.
func (r *Result) Config() Config {
	var c C.gptq_config
	C.gptq_config_init(&c)
	C.gptq_result_config(r.p, &c)
	return configFromC(&c)
}

func copyI32(p *C.int32_t, n int) []int32 {
	out := make([]int32, n)
	if n > 0 {
		copy(out, unsafe.Slice((*int32)(unsafe.Pointer(p)), n))
	}
	return out
}

func copyF32(p *C.float, n int) []float32 {
	out := make([]float32, n)
	if n > 0 {
		copy(out, unsafe.Slice((*float32)(unsafe.Pointer(p)), n))
	}
	return out
}

// Codes are the integer codes, [out, in], original column order.
func (r *Result) Codes() []int32 {
	defer runtime.KeepAlive(r)
	return copyI32(C.gptq_result_codes(r.p), r.OutFeatures()*r.InFeatures())
}

// Scales are the float32 scales, [ngroups, out].
func (r *Result) Scales() []float32 {
	defer runtime.KeepAlive(r)
	return copyF32(C.gptq_result_scales(r.p), r.NGroups()*r.OutFeatures())
}

// Zeros are the true integer zero points, [ngroups, out].
func (r *Result) Zeros() []int32 {
	defer runtime.KeepAlive(r)
	return copyI32(C.gptq_result_zeros(r.p), r.NGroups()*r.OutFeatures())
}

// GIdx is the group of every input column, [in].
func (r *Result) GIdx() []int32 {
	defer runtime.KeepAlive(r)
	return copyI32(C.gptq_result_g_idx(r.p), r.InFeatures())
}

// Perm is the processing order, [in] (the identity without act-order).
func (r *Result) Perm() []int32 {
	defer runtime.KeepAlive(r)
	return copyI32(C.gptq_result_perm(r.p), r.InFeatures())
}

// Q is the dequantized weight matrix, [out, in].
func (r *Result) Q() []float32 {
	defer runtime.KeepAlive(r)
	return copyF32(C.gptq_result_q(r.p), r.OutFeatures()*r.InFeatures())
}

// Format is the checkpoint format of the zero points.
type Format int32

const (
	FormatV1 Format = C.GPTQ_FORMAT_V1 // "gptq": stored zero - 1
	FormatV2 Format = C.GPTQ_FORMAT_V2 // "gptq_v2": stored as they are
)

// PackMode is how v1 words are written (see GPTQ_PACK_* in gptq.h).
type PackMode int32

const (
	PackClean     PackMode = C.GPTQ_PACK_CLEAN
	PackAutoGPTQ  PackMode = C.GPTQ_PACK_AUTOGPTQ
	PackGPTQModel PackMode = C.GPTQ_PACK_GPTQMODEL
)

// PackedShape gives the shapes of qweight and qzeros.
func PackedShape(bits, out, in, ngroups int) (qweight, qzeros [2]int, err error) {
	var qw, qz [2]C.int64_t
	if err = check(C.gptq_packed_shape(C.int32_t(bits), C.int64_t(out), C.int64_t(in),
		C.int64_t(ngroups), &qw[0], &qz[0]), nil); err != nil {
		return
	}
	return [2]int{int(qw[0]), int(qw[1])}, [2]int{int(qz[0]), int(qz[1])}, nil
}

// Packed holds a layer's checkpoint tensors: QWeight [QWeightShape], QZeros
// [QZerosShape], Scales [ngroups, out] as float16 bit patterns, GIdx [in].
type Packed struct {
	Bits, OutFeatures, InFeatures, NGroups int
	Format                                 Format
	QWeightShape, QZerosShape              [2]int
	QWeight, QZeros, GIdx                  []int32
	Scales                                 []uint16
}

// NewPacked allocates zeroed tensors of the right sizes.
func NewPacked(bits int, format Format, out, in, ngroups int) (*Packed, error) {
	qw, qz, err := PackedShape(bits, out, in, ngroups)
	if err != nil {
		return nil, err
	}
	return &Packed{
		Bits: bits, OutFeatures: out, InFeatures: in, NGroups: ngroups, Format: format,
		QWeightShape: qw, QZerosShape: qz,
		QWeight: make([]int32, qw[0]*qw[1]), QZeros: make([]int32, qz[0]*qz[1]),
		Scales: make([]uint16, ngroups*out), GIdx: make([]int32, in),
	}, nil
}

func (p *Packed) checkSizes() error {
	for _, c := range []struct {
		what       string
		n, rows, k int
	}{
		{"qweight", len(p.QWeight), p.QWeightShape[0], p.QWeightShape[1]},
		{"qzeros", len(p.QZeros), p.QZerosShape[0], p.QZerosShape[1]},
		{"scales", len(p.Scales), p.NGroups, p.OutFeatures},
		{"g_idx", len(p.GIdx), p.InFeatures, 1},
	} {
		if err := wantLen(c.what, c.n, c.rows, c.k); err != nil {
			return err
		}
	}
	return nil
}

// Pack returns the checkpoint tensors of the layer.
func (r *Result) Pack(format Format, mode PackMode) (*Packed, error) {
	if r.p == nil {
		return nil, ErrClosed
	}
	p, err := NewPacked(r.Config().Bits, format, r.OutFeatures(), r.InFeatures(), r.NGroups())
	if err != nil {
		return nil, err
	}
	err = r.ctx.check(C.gptq_go_pack_result(r.ctx.p, r.p, C.int32_t(mode), C.int32_t(p.Bits),
		C.int32_t(format), C.int64_t(p.OutFeatures), C.int64_t(p.InFeatures),
		C.int64_t(p.NGroups), i32p(p.QWeight), i32p(p.QZeros), u16p(p.Scales), i32p(p.GIdx)))
	runtime.KeepAlive(r)
	if err != nil {
		return nil, err
	}
	return p, nil
}

// Unpacked holds a layer's quantized tensors: Codes [out, in], Scales and Zeros
// [ngroups, out] (true zero points), GIdx [in].
type Unpacked struct {
	Bits, OutFeatures, InFeatures, NGroups int
	Codes, Zeros, GIdx                     []int32
	Scales                                 []float32
}

// Unpack reads the checkpoint tensors back into codes, scales and zero points.
func (p *Packed) Unpack(ctx *Context, mode PackMode) (*Unpacked, error) {
	if err := p.checkSizes(); err != nil {
		return nil, err
	}
	u := &Unpacked{
		Bits: p.Bits, OutFeatures: p.OutFeatures, InFeatures: p.InFeatures, NGroups: p.NGroups,
		Codes: make([]int32, p.OutFeatures*p.InFeatures), Zeros: make([]int32, p.NGroups*p.OutFeatures),
		Scales: make([]float32, p.NGroups*p.OutFeatures), GIdx: make([]int32, p.InFeatures),
	}
	err := ctx.check(C.gptq_go_unpack(ctx.p, C.int32_t(mode), C.int32_t(p.Bits), C.int32_t(p.Format),
		C.int64_t(p.OutFeatures), C.int64_t(p.InFeatures), C.int64_t(p.NGroups),
		i32p(p.QWeight), i32p(p.QZeros), u16p(p.Scales), i32p(p.GIdx),
		i32p(u.Codes), f32p(u.Scales), i32p(u.Zeros), i32p(u.GIdx)))
	if err != nil {
		return nil, err
	}
	return u, nil
}

// Pack packs unpacked tensors into checkpoint tensors (not PackAutoGPTQ, which needs
// the dequantized weights: use Result.Pack).
func (u *Unpacked) Pack(ctx *Context, format Format, mode PackMode) (*Packed, error) {
	for _, c := range []struct {
		what       string
		n, rows, k int
	}{
		{"codes", len(u.Codes), u.OutFeatures, u.InFeatures},
		{"scales", len(u.Scales), u.NGroups, u.OutFeatures},
		{"zeros", len(u.Zeros), u.NGroups, u.OutFeatures},
		{"g_idx", len(u.GIdx), u.InFeatures, 1},
	} {
		if err := wantLen(c.what, c.n, c.rows, c.k); err != nil {
			return nil, err
		}
	}
	p, err := NewPacked(u.Bits, format, u.OutFeatures, u.InFeatures, u.NGroups)
	if err != nil {
		return nil, err
	}
	err = ctx.check(C.gptq_go_pack(ctx.p, C.int32_t(mode), C.int32_t(u.Bits), C.int32_t(format),
		C.int64_t(u.OutFeatures), C.int64_t(u.InFeatures), C.int64_t(u.NGroups),
		i32p(u.Codes), f32p(u.Scales), i32p(u.Zeros), i32p(u.GIdx),
		i32p(p.QWeight), i32p(p.QZeros), u16p(p.Scales), i32p(p.GIdx)))
	if err != nil {
		return nil, err
	}
	return p, nil
}

// Matmul computes y [batch, out] = x [batch, in] * Wq^T (+ bias [out] unless nil)
// straight from the packed tensors.
func (p *Packed) Matmul(ctx *Context, x []float32, batch int, bias []float32) ([]float32, error) {
	if err := p.checkSizes(); err != nil {
		return nil, err
	}
	if err := wantLen("x", len(x), batch, p.InFeatures); err != nil {
		return nil, err
	}
	if bias != nil {
		if err := wantLen("bias", len(bias), p.OutFeatures, 1); err != nil {
			return nil, err
		}
	}
	y := make([]float32, batch*p.OutFeatures)
	err := ctx.check(C.gptq_go_dequant_matmul(ctx.p, C.int32_t(p.Bits), C.int32_t(p.Format),
		C.int64_t(p.OutFeatures), C.int64_t(p.InFeatures), C.int64_t(p.NGroups),
		i32p(p.QWeight), i32p(p.QZeros), u16p(p.Scales), i32p(p.GIdx),
		f32p(x), C.int64_t(batch), f32p(bias), f32p(y)))
	if err != nil {
		return nil, err
	}
	return y, nil
}

// FP32ToFP16 rounds to IEEE float16 (nearest even) and returns its bits.
func FP32ToFP16(f float32) uint16 { return uint16(C.gptq_fp32_to_fp16(C.float(f))) }

// FP16ToFP32 widens float16 bits exactly.
func FP16ToFP32(h uint16) float32 { return float32(C.gptq_fp16_to_fp32(C.uint16_t(h))) }
