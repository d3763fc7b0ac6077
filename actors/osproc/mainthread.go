package osproc

import (
	"errors"
	"fmt"
	"os/exec"
	"runtime"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// The workers' parent-death signal (PR_SET_PDEATHSIG, group.go) fires when
// the OS thread that forked the worker exits, not when the process does,
// and execve ends every thread of the process but the one that calls it.
// A master that re-executes itself (an upgrade in place) keeps its
// workers only if every one of them was forked by the thread that calls
// execve, and that thread never exited before: the main thread, the one
// thread that lives as long as the process.
//
// Go runs init functions on the main thread; locking it here keeps the
// main goroutine (main, or a test binary's TestMain) on it for good, and
// no other goroutine ever runs there. ServeMainThread, called from main,
// then lends the main thread to the forks and the exec.
func init() { runtime.LockOSThread() }

// mainThread hands work to the main thread while ServeMainThread serves.
var mainThread struct {
	mu sync.Mutex
	// requests is served by the main thread until stopped is closed; nil
	// when ServeMainThread is not running.
	requests chan func()
	stopped  chan struct{}
}

// ServeMainThread runs run on a goroutine of its own and, until run
// returns, serves on the calling thread, which must be the main thread
// (call it from main), the worker forks, the before-fork command's start
// and Exec. It returns run's result. Called from any other thread, or
// while already serving, it panics: that is a mistake in the program.
func ServeMainThread(run func() int) int {
	if unix.Gettid() != unix.Getpid() {
		panic("osproc.ServeMainThread: not called on the main thread (call it from main)")
	}
	requests, stopped := make(chan func()), make(chan struct{})
	mainThread.mu.Lock()
	if mainThread.requests != nil {
		mainThread.mu.Unlock()
		panic("osproc.ServeMainThread: already serving")
	}
	mainThread.requests, mainThread.stopped = requests, stopped
	mainThread.mu.Unlock()
	defer func() {
		mainThread.mu.Lock()
		mainThread.requests, mainThread.stopped = nil, nil
		mainThread.mu.Unlock()
		close(stopped) // a request still on its way runs on its caller's thread
	}()

	done := make(chan int, 1)
	go func() { done <- run() }()
	for {
		select {
		case f := <-requests:
			f()
		case code := <-done:
			return code
		}
	}
}

// MainThreadServing reports whether ServeMainThread serves: the forks and
// Exec run on the main thread.
func MainThreadServing() bool {
	mainThread.mu.Lock()
	defer mainThread.mu.Unlock()
	return mainThread.requests != nil
}

// toMainThread hands f to the main thread and reports true once f has
// run there; false (f not run) when the main thread does not serve.
func toMainThread(f func()) bool {
	mainThread.mu.Lock()
	requests, stopped := mainThread.requests, mainThread.stopped
	mainThread.mu.Unlock()
	if requests == nil {
		return false
	}
	done := make(chan struct{})
	select {
	case requests <- func() { defer close(done); f() }:
		<-done
		return true
	case <-stopped:
		return false
	}
}

// onMainThread runs f on the main thread while ServeMainThread serves,
// else on the caller's thread: then nothing re-executes the master, and
// whichever thread forks lives as long as the process (Go ends a thread
// only when a goroutine locked to it exits, and this package locks none
// but the main one).
func onMainThread(f func()) {
	if !toMainThread(f) {
		f()
	}
}

// startOnMainThread starts cmd from the main thread while it serves.
func startOnMainThread(cmd *exec.Cmd) error {
	var err error
	onMainThread(func() { err = cmd.Start() })
	return err
}

// errNotServing: Exec without ServeMainThread.
var errNotServing = errors.New("exec: the main thread does not serve forks (osproc.ServeMainThread), so the workers would die at the exec")

// Exec replaces the master's image with path (execve) on the main thread,
// the thread that forked every worker, so that their parent-death signal
// does not fire: they stay the children of the same pid, with the signal
// armed. It returns only if the exec failed, with the process as it was
// (the kernel failed before its point of no return). Without
// ServeMainThread it refuses.
func Exec(path string, argv, env []string) error {
	err := errNotServing
	toMainThread(func() { err = syscall.Exec(path, argv, env) })
	if err == errNotServing {
		return err
	}
	return fmt.Errorf("exec %s: %w", path, err)
}
