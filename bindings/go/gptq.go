// Package gptq is libgptq from Go: GPTQ post-training quantization of linear layers
// and of Hugging Face Llama-family models, through cgo.
//
//	ctx, err := gptq.NewContext(nil)
//	defer ctx.Close()
//	h, err := ctx.NewHessian(in)
//	err = h.Add(x, nsamples, seqlen)              // [nsamples*seqlen, in] float32
//	r, err := gptq.QuantizeLayer(ctx, w, out, in, h, gptq.DefaultConfig())
//	p, err := r.Pack(gptq.FormatV1, gptq.PackClean) // qweight, qzeros, scales, g_idx
//
// Every object has an explicit Close; a finalizer frees what was not closed, as a
// safety net only. A context and the objects made with it are used by one goroutine
// at a time; separate contexts may be used concurrently. The library is found with
// pkg-config (set PKG_CONFIG_PATH to an installed prefix's lib/pkgconfig).
package gptq

// #cgo pkg-config: gptq
// #include <stdlib.h>
// #include <gptq/gptq.h>
// #include "helpers.h"
import "C"

import (
	"runtime"
	"runtime/cgo"
	"sync"
	"unsafe"
)

// Version is the version of the loaded library, e.g. "0.1.0".
func Version() string { return C.GoString(C.gptq_version()) }

// Backend selects where the computation runs.
type Backend int32

const (
	BackendAuto Backend = C.GPTQ_BACKEND_AUTO
	BackendCPU  Backend = C.GPTQ_BACKEND_CPU
	BackendCUDA Backend = C.GPTQ_BACKEND_CUDA
)

func (b Backend) String() string { return C.GoString(C.gptq_backend_name(C.int32_t(b))) }

// BackendAvailable returns nil if the backend can be used here, else the reason.
func BackendAvailable(b Backend) error {
	var why [512]C.char
	if C.gptq_backend_available(C.int32_t(b), &why[0], C.size_t(len(why))) == 1 {
		return nil
	}
	return &Error{Status: int(C.GPTQ_ERR_NOT_SUPPORTED), Message: C.GoString(&why[0])}
}

// ContextOptions configure a context; the zero value means the library's defaults
// except for Backend, where zero is BackendAuto: set BackendCPU explicitly or pass
// nil to NewContext for the CPU default.
type ContextOptions struct {
	Backend Backend
	Threads int // 0: all cores
	Device  int // GPU ordinal for CUDA
	// Log, if set, receives the library's log lines up to LogLevel (silent without).
	// It is called on the goroutine that made the call that logs.
	Log      func(level LogLevel, msg string)
	LogLevel LogLevel
}

// LogLevel is the level of a log line; a sink gets the lines at or below its level.
type LogLevel int32

const (
	LogError LogLevel = C.GPTQ_LOG_ERROR
	LogWarn  LogLevel = C.GPTQ_LOG_WARN
	LogInfo  LogLevel = C.GPTQ_LOG_INFO
	LogDebug LogLevel = C.GPTQ_LOG_DEBUG
)

//export gptqGoLog
func gptqGoLog(handle C.uintptr_t, level C.int32_t, msg *C.char) {
	defer func() { recover() }() // a panicking sink must not unwind into C
	cgo.Handle(handle).Value().(func(LogLevel, string))(LogLevel(level), C.GoString(msg))
}

// Context is a libgptq context: backend, threads and the last error message.
type Context struct {
	p *C.gptq_ctx
	// Objects made with the context must be freed before it. Each holds a pointer to
	// its context (so a context outlives its objects for the garbage collector too)
	// and counts itself here; a closed context is freed when the count reaches 0.
	// The mutex is for finalizers, which run on their own goroutine.
	mu     sync.Mutex
	open   int
	closed bool
	log    cgo.Handle // 0 when no log sink
}

// NewContext creates a context; nil options give the defaults (CPU, all cores).
func NewContext(o *ContextOptions) (*Context, error) {
	var opts C.gptq_ctx_options
	C.gptq_ctx_options_init(&opts)
	var log cgo.Handle
	if o != nil {
		opts.backend = C.int32_t(o.Backend)
		opts.threads = C.int32_t(o.Threads)
		opts.device = C.int32_t(o.Device)
		if o.Log != nil {
			log = cgo.NewHandle(o.Log)
			C.gptq_go_set_log(&opts, C.uintptr_t(log), C.int32_t(o.LogLevel))
		}
	}
	var p *C.gptq_ctx
	var msg [512]C.char
	if st := C.gptq_ctx_create(&opts, &p, &msg[0], C.size_t(len(msg))); st != C.GPTQ_OK {
		if log != 0 {
			log.Delete()
		}
		return nil, &Error{Status: int(st), Message: C.GoString(&msg[0])}
	}
	c := &Context{p: p, log: log}
	runtime.SetFinalizer(c, (*Context).Close)
	return c, nil
}

// Close ends the use of the context: no new object can be made with it. The context
// itself is freed now, or, if objects made with it are still open, when the last of
// them is closed. Safe to call more than once.
func (c *Context) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.closed {
		c.closed = true
		runtime.SetFinalizer(c, nil)
		c.freeLocked()
	}
	return nil
}

func (c *Context) freeLocked() {
	if c.closed && c.open == 0 && c.p != nil {
		C.gptq_ctx_free(c.p)
		c.p = nil
		if c.log != 0 {
			c.log.Delete()
			c.log = 0
		}
	}
}

// Backend is the backend in use (never BackendAuto).
func (c *Context) Backend() Backend { return Backend(C.gptq_ctx_backend(c.p)) }

// LastError is the message of the last failure on this context ("" if none).
func (c *Context) LastError() string { return C.GoString(C.gptq_ctx_last_error(c.p)) }

func (c *Context) check(st C.int) error { return check(st, c.p) }

// usable reports whether new objects may be made with the context.
func (c *Context) usable() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return !c.closed
}

func (c *Context) adopt() {
	c.mu.Lock()
	c.open++
	c.mu.Unlock()
}

func (c *Context) release() {
	c.mu.Lock()
	c.open--
	c.freeLocked()
	c.mu.Unlock()
}

func f32p(s []float32) *C.float {
	if len(s) == 0 {
		return nil
	}
	return (*C.float)(unsafe.Pointer(&s[0]))
}

func i32p(s []int32) *C.int32_t {
	if len(s) == 0 {
		return nil
	}
	return (*C.int32_t)(unsafe.Pointer(&s[0]))
}

func u16p(s []uint16) *C.uint16_t {
	if len(s) == 0 {
		return nil
	}
	return (*C.uint16_t)(unsafe.Pointer(&s[0]))
}

func wantLen(what string, got, rows, cols int) error {
	if got != rows*cols {
		return invalid("%s: %d elements, expected %d x %d", what, got, rows, cols)
	}
	return nil
}

// Hessian accumulates H = 2/n * sum over samples of X_s^T X_s.
type Hessian struct {
	ctx *Context
	p   *C.gptq_hessian
}

// NewHessian returns a zeroed accumulator for inFeatures input channels.
func (c *Context) NewHessian(inFeatures int) (*Hessian, error) {
	if !c.usable() {
		return nil, ErrClosed
	}
	var p *C.gptq_hessian
	if err := c.check(C.gptq_hessian_create(c.p, C.int64_t(inFeatures), &p)); err != nil {
		return nil, err
	}
	h := &Hessian{ctx: c, p: p}
	c.adopt()
	runtime.SetFinalizer(h, (*Hessian).Close)
	return h, nil
}

// NewHessianFromMatrix returns an accumulator that starts from h ([in, in],
// symmetric, copied) standing for nsamples samples.
func (c *Context) NewHessianFromMatrix(inFeatures int, h []float32, nsamples int) (*Hessian, error) {
	if !c.usable() {
		return nil, ErrClosed
	}
	if err := wantLen("h", len(h), inFeatures, inFeatures); err != nil {
		return nil, err
	}
	var p *C.gptq_hessian
	err := c.check(C.gptq_hessian_create_from(c.p, C.int64_t(inFeatures), f32p(h), C.int64_t(nsamples), &p))
	runtime.KeepAlive(h)
	if err != nil {
		return nil, err
	}
	hs := &Hessian{ctx: c, p: p}
	c.adopt()
	runtime.SetFinalizer(hs, (*Hessian).Close)
	return hs, nil
}

// Close frees the accumulator; safe to call more than once.
func (h *Hessian) Close() error {
	if h.p != nil {
		C.gptq_hessian_free(h.p)
		h.p = nil
		h.ctx.release()
		runtime.SetFinalizer(h, nil)
	}
	return nil
}

// Add adds nsamples sequences of seqlen rows; x is [nsamples*seqlen, in].
func (h *Hessian) Add(x []float32, nsamples, seqlen int) error {
	if h.p == nil {
		return ErrClosed
	}
	if err := wantLen("x", len(x), nsamples*seqlen, h.InFeatures()); err != nil {
		return err
	}
	err := h.ctx.check(C.gptq_hessian_add(h.ctx.p, h.p, f32p(x), C.int64_t(nsamples), C.int64_t(seqlen)))
	runtime.KeepAlive(x)
	return err
}

// Merge adds the samples of another accumulator of the same size.
func (h *Hessian) Merge(other *Hessian) error {
	if h.p == nil || other.p == nil {
		return ErrClosed
	}
	err := h.ctx.check(C.gptq_hessian_merge(h.ctx.p, h.p, other.p))
	runtime.KeepAlive(other)
	return err
}

// InFeatures is the number of input channels.
func (h *Hessian) InFeatures() int { return int(C.gptq_hessian_in_features(h.p)) }

// NSamples is the number of samples accumulated.
func (h *Hessian) NSamples() int { return int(C.gptq_hessian_nsamples(h.p)) }

// Read returns H, [in, in] row-major.
func (h *Hessian) Read() ([]float32, error) {
	if h.p == nil {
		return nil, ErrClosed
	}
	n := h.InFeatures()
	out := make([]float32, n*n)
	err := h.ctx.check(C.gptq_hessian_read(h.ctx.p, h.p, f32p(out), C.size_t(len(out))))
	return out, err
}
