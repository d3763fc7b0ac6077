//go:build linux

package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/coreos/go-systemd/v22/activation"
	"github.com/coreos/go-systemd/v22/daemon"

	"github.com/dutchmaster/dutchmaster"
	"github.com/dutchmaster/dutchmaster/sockets/testproc"
	"github.com/dutchmaster/dutchmaster/sockets/worker"
)

// The roles this test binary plays, started by the tests (testproc):
//
//	master          dutchmaster itself, with the process's arguments
//	worker          a Go worker written with sockets/worker (apiWorker),
//	                or a fault worker when DM_FAULT is set (faultroles_test.go)
//	systemd-worker  a worker that speaks only systemd's protocols
//	listen-pid-master  (ops_test.go) the master, started the way systemd starts it
func init() {
	// As main runs it: forks (and an upgrade's exec) on the main thread.
	testproc.Register("master", func(args []string) int {
		return dutchmaster.ServeMainThread(func() int { return run(args, os.Stderr) })
	})
	testproc.Register("systemd-worker", func([]string) int {
		systemdWorker(misbehave())
		return 0
	})
	testproc.Register("worker", func([]string) int {
		faultRole()
		if file := os.Getenv("DM_TEST_ORPHAN"); file != "" {
			leaveOrphan(file)
		}
		if misbehave() {
			signal.Ignore(syscall.SIGTERM)
		}
		apiWorker()
		return 0
	})
}

func TestMain(m *testing.M) { testproc.Main(m) }

// misbehave makes a worker whose generation is at least DM_TEST_FAIL_GEN
// fail the way DM_TEST_FAIL says: crash (exit 1 before ready),
// never-ready (say nothing, serve nothing) or ignore-term, which it
// reports for the worker to ignore SIGTERM.
func misbehave() (ignoreTerm bool) {
	from, err := strconv.Atoi(os.Getenv("DM_TEST_FAIL_GEN"))
	if err != nil {
		return false
	}
	if gen, _ := strconv.Atoi(os.Getenv("DUTCHMASTER_GENERATION")); gen < from {
		return false
	}
	switch os.Getenv("DM_TEST_FAIL") {
	case "crash":
		fmt.Fprintln(os.Stderr, "worker: failing at start on purpose")
		os.Exit(1)
	case "never-ready":
		select {}
	}
	return os.Getenv("DM_TEST_FAIL") == "ignore-term"
}

// bootDelay is how long a test worker takes to become ready (DM_TEST_BOOT).
func bootDelay() time.Duration {
	d, _ := time.ParseDuration(os.Getenv("DM_TEST_BOOT"))
	return d
}

// bootGate holds a worker whose id is at least DM_TEST_GATE_WORKER back
// before it serves, until the file DM_TEST_GATE exists: the test decides
// when a replacement listens.
func bootGate() {
	file := os.Getenv("DM_TEST_GATE")
	from, err := strconv.Atoi(os.Getenv("DM_TEST_GATE_WORKER"))
	if file == "" || err != nil {
		return
	}
	if id, _ := strconv.Atoi(os.Getenv("DUTCHMASTER_WORKER_ID")); id < from {
		return
	}
	for {
		if _, err := os.Stat(file); err == nil {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// handler answers every test worker's endpoints: / gives the pid, /slow
// takes DM_TEST_SLOW (default 1s) before answering, /say writes the line
// ?line= to stdout (or stderr: ?stream=err) and gives the pid, /crash
// exits 1.
func handler(extra func(mux *http.ServeMux)) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%d", os.Getpid())
	})
	mux.HandleFunc("/slow", func(w http.ResponseWriter, r *http.Request) {
		d, err := time.ParseDuration(r.URL.Query().Get("d"))
		if err != nil {
			d = time.Second
		}
		fmt.Println("slow request started") // the test waits for this line in the master's log
		time.Sleep(d)
		fmt.Fprintf(w, "%d", os.Getpid())
	})
	mux.HandleFunc("/say", func(w http.ResponseWriter, r *http.Request) {
		out := os.Stdout
		if r.URL.Query().Get("stream") == "err" {
			out = os.Stderr
		}
		fmt.Fprintln(out, r.URL.Query().Get("line"))
		fmt.Fprintf(w, "%d", os.Getpid())
	})
	mux.HandleFunc("/crash", func(w http.ResponseWriter, r *http.Request) {
		os.Exit(1)
	})
	mux.HandleFunc("/whoami", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "uid=%d gid=%d", os.Getuid(), os.Getgid())
	})
	mux.HandleFunc("/env", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, strings.Join(os.Environ(), "\n"))
	})
	if extra != nil {
		extra(mux)
	}
	return mux
}

// systemdWorker speaks only systemd's protocols, through go-systemd:
// activation.Listeners (which insists that LISTEN_PID is its own pid) and
// READY=1 on NOTIFY_SOCKET. It stops gracefully on SIGTERM.
func systemdWorker(ignoreTerm bool) {
	term := make(chan os.Signal, 1)
	if ignoreTerm {
		signal.Ignore(syscall.SIGTERM)
	} else {
		signal.Notify(term, syscall.SIGTERM)
	}
	ls, err := activation.Listeners()
	if err != nil || len(ls) == 0 || ls[0] == nil {
		fmt.Fprintf(os.Stderr, "systemd worker: no listeners (LISTEN_PID=%s, pid %d): %v\n", os.Getenv("LISTEN_PID"), os.Getpid(), err)
		os.Exit(3)
	}
	time.Sleep(bootDelay())
	// Go's Server.Shutdown drops a connection whose request it reads after
	// the shutdown began, so the worker waits, after it stops accepting,
	// until every accepted connection has been answered.
	var busy sync.WaitGroup
	srv := &http.Server{Handler: handler(nil), ConnState: func(c net.Conn, s http.ConnState) {
		switch s {
		case http.StateNew:
			busy.Add(1)
		case http.StateHijacked, http.StateClosed:
			busy.Done()
		}
	}}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ls[0]) }()
	if ok, err := daemon.SdNotify(false, daemon.SdNotifyReady); !ok {
		fmt.Fprintf(os.Stderr, "systemd worker: sd_notify failed: %v\n", err)
		os.Exit(3)
	}
	select {
	case <-term:
	case err := <-served:
		fmt.Fprintf(os.Stderr, "systemd worker: %v\n", err)
		os.Exit(1)
	}
	// Stop accepting and let Serve return before Shutdown: a connection
	// Serve accepted just before is then tracked, so Shutdown waits for it
	// instead of leaving it to die with the process.
	ls[0].Close()
	<-served
	busy.Wait() // bounded by the master's kill timeout
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	_ = srv.Shutdown(ctx)
	os.Exit(0)
}

// apiWorker is a Go worker written with the worker API of
// sockets/worker, as an application would use it.
func apiWorker() {
	l, err := worker.Listener("http")
	if err != nil {
		fmt.Fprintf(os.Stderr, "api worker: %v\n", err)
		os.Exit(3)
	}
	time.Sleep(bootDelay())
	bootGate()
	ballast() // DM_TEST_BALLAST_MB: over a memory limit from the start
	srv := &http.Server{Handler: hangable(handler(func(mux *http.ServeMux) {
		mux.HandleFunc("/restart", func(w http.ResponseWriter, r *http.Request) {
			if err := worker.RequestRestart(); err != nil {
				http.Error(w, err.Error(), http.StatusInternalServerError)
				return
			}
			fmt.Fprintf(w, "%d", os.Getpid())
		})
		mux.HandleFunc("/grow", grow)
	}))}
	if err := worker.ServeHTTP(srv, l); err != nil {
		fmt.Fprintf(os.Stderr, "api worker: %v\n", err)
		os.Exit(1)
	}
	os.Exit(0)
}
