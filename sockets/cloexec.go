package sockets

import (
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"slices"
	"strconv"

	"golang.org/x/sys/unix"
)

// CloseOnExecAll marks every open descriptor numbered 3 or above in the
// calling process close-on-exec, except those in keep. The master calls it
// at start-up: whoever launched it may have leaked descriptors without
// close-on-exec, and every one of them would otherwise reach every worker.
// Descriptors stay open in the master; only exec closes them.
//
// It reads /proc/self/fd; without /proc it falls back to close_range(2)
// with CLOSE_RANGE_CLOEXEC (Linux 5.11+) over the ranges between the kept
// descriptors.
func CloseOnExecAll(keep ...int) error {
	entries, err := os.ReadDir("/proc/self/fd")
	if errors.Is(err, fs.ErrNotExist) {
		return closeOnExecRanges(keep)
	}
	if err != nil {
		return fmt.Errorf("close-on-exec sweep: %w", err)
	}
	for _, e := range entries {
		fd, err := strconv.Atoi(e.Name())
		if err != nil || fd < 3 || slices.Contains(keep, fd) {
			continue
		}
		// EBADF: the descriptor was the directory's own, or closed meanwhile.
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_SETFD, unix.FD_CLOEXEC); err != nil && err != unix.EBADF {
			return fmt.Errorf("close-on-exec sweep: fd %d: %w", fd, err)
		}
	}
	return nil
}

func closeOnExecRanges(keep []int) error {
	keep = slices.Sorted(slices.Values(keep))
	first := uint(3)
	for _, k := range keep {
		if k < int(first) {
			continue
		}
		if uint(k) > first {
			if err := unix.CloseRange(first, uint(k)-1, unix.CLOSE_RANGE_CLOEXEC); err != nil {
				return fmt.Errorf("close-on-exec sweep: close_range: %w", err)
			}
		}
		first = uint(k) + 1
	}
	if err := unix.CloseRange(first, math.MaxUint32, unix.CLOSE_RANGE_CLOEXEC); err != nil {
		return fmt.Errorf("close-on-exec sweep: close_range: %w", err)
	}
	return nil
}
