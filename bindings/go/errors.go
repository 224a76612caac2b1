package gptq

// #include <gptq/gptq.h>
import "C"

import "fmt"

// Error is a failed libgptq call: the gptq_status code and the message the library
// recorded in its context (gptq_ctx_last_error).
type Error struct {
	Status  int
	Message string
}

func (e *Error) Error() string {
	name := C.GoString(C.gptq_strerror(C.int(e.Status)))
	if e.Message == "" {
		return fmt.Sprintf("gptq: %s (status %d)", name, e.Status)
	}
	return fmt.Sprintf("gptq: %s (%s, status %d)", e.Message, name, e.Status)
}

// Is reports whether target is an *Error with the same status, so that
// errors.Is(err, gptq.ErrShape) tests the kind of a failure.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Status == e.Status
}

// Sentinels for errors.Is, one per status code (values pinned by the library).
var (
	ErrInvalidArgument     = &Error{Status: -1}
	ErrOutOfMemory         = &Error{Status: -2}
	ErrNotSupported        = &Error{Status: -3}
	ErrNotPositiveDefinite = &Error{Status: -4}
	ErrNumeric             = &Error{Status: -5}
	ErrIO                  = &Error{Status: -6}
	ErrMalformed           = &Error{Status: -7}
	ErrShape               = &Error{Status: -8}
	ErrDevice              = &Error{Status: -9}
	ErrCancelled           = &Error{Status: -10}
	ErrInternal            = &Error{Status: -11}
	ErrNotFound            = &Error{Status: -12}
)

// ErrClosed is returned by methods of an object after Close.
var ErrClosed = &Error{Status: -1, Message: "use of a closed gptq object"}

// check turns a status into an error carrying the context's message.
func check(status C.int, ctx *C.gptq_ctx) error {
	if status == C.GPTQ_OK {
		return nil
	}
	msg := ""
	if ctx != nil {
		msg = C.GoString(C.gptq_ctx_last_error(ctx))
	}
	return &Error{Status: int(status), Message: msg}
}

func invalid(format string, args ...interface{}) error {
	return &Error{Status: int(C.GPTQ_ERR_INVALID_ARGUMENT), Message: fmt.Sprintf(format, args...)}
}
