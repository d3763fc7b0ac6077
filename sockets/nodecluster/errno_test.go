package nodecluster

import (
	"errors"
	"fmt"
	"os"
	"syscall"
	"testing"
)

func TestUVErrno(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want int
		name string
	}{
		{nil, 0, "OK"},
		{syscall.EADDRINUSE, -98, "EADDRINUSE"},
		{fmt.Errorf("tcp://:80: %w", os.NewSyscallError("bind", syscall.EACCES)), -13, "EACCES"},
		{inUse{errors.New("x exists and is not a socket")}, UVEADDRINUSE, "EADDRINUSE"},
		{errors.New("no errno"), UVEINVAL, "EINVAL"},
	} {
		got := UVErrno(tc.err)
		if got != tc.want || ErrnoName(got) != tc.name {
			t.Errorf("UVErrno(%v) = %d (%s), want %d (%s)", tc.err, got, ErrnoName(got), tc.want, tc.name)
		}
	}
	if got := ErrnoName(-100000); got != "-100000" {
		t.Errorf("ErrnoName of an unknown number: %q", got)
	}
}
