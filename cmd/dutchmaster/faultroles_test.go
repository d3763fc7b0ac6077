//go:build linux

package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// The fault roles: workers that misbehave on purpose, for faults_test.go.
// They are the "worker" role with DM_FAULT set (roles_test.go calls
// faultRole first); without DM_FAULT nothing here runs and the "worker"
// role is apiWorker.
//
//	DM_FAULT=raw           rawWorker: the protocol by hand (fd 3, the IPC fd), with
//	                       HTTP endpoints that trigger each fault
//	DM_FAULT=child         a child of a raw worker: sleeps until killed
//	DM_FAULT_BOOT=DUR      time before ready, for workers matched by
//	DM_FAULT_BOOT_GEN=N    generation >= N, or
//	DM_FAULT_BOOT_WORKER=N the worker with this id (either may be set; none: all)
//	DM_FAULT_DEAF_GEN=N    workers of generation <= N ignore the drain: SIGTERM
//	                       and {"event":"disconnect"}/EOF on the IPC channel
const faultEnv = "DM_FAULT"

// faultRole runs the fault role DM_FAULT names and exits; it returns at
// once when DM_FAULT is unset.
func faultRole() {
	switch os.Getenv(faultEnv) {
	case "":
		return
	case "child":
		time.Sleep(time.Hour) // until its process group is killed
		os.Exit(0)
	case "raw":
		os.Exit(rawWorker())
	case "daemon":
		os.Exit(daemonWorker())
	case "chatty":
		os.Exit(chattyWorker())
	default:
		fmt.Fprintf(os.Stderr, "unknown %s=%q\n", faultEnv, os.Getenv(faultEnv))
		os.Exit(2)
	}
}

// faultBoot is this worker's time before ready (DM_FAULT_BOOT and the
// knobs that say whom it applies to).
func faultBoot() time.Duration {
	d, err := time.ParseDuration(os.Getenv("DM_FAULT_BOOT"))
	if err != nil {
		return 0
	}
	gen, _ := strconv.Atoi(os.Getenv("DUTCHMASTER_GENERATION"))
	id, _ := strconv.Atoi(os.Getenv("DUTCHMASTER_WORKER_ID"))
	if s := os.Getenv("DM_FAULT_BOOT_GEN"); s != "" {
		if n, _ := strconv.Atoi(s); gen < n {
			return 0
		}
	}
	if s := os.Getenv("DM_FAULT_BOOT_WORKER"); s != "" {
		if n, _ := strconv.Atoi(s); id != n {
			return 0
		}
	}
	return d
}

// deaf reports whether this worker ignores the drain (DM_FAULT_DEAF_GEN).
func deaf() bool {
	n, err := strconv.Atoi(os.Getenv("DM_FAULT_DEAF_GEN"))
	if err != nil {
		return false
	}
	gen, _ := strconv.Atoi(os.Getenv("DUTCHMASTER_GENERATION"))
	return gen <= n
}

// rawWorker speaks the worker protocol without the worker API, so that it
// can do what the API never would: write garbage on the IPC channel, close
// it, flood it. It serves HTTP on fd 3:
//
//	/                       its pid
//	/slow?d=DUR             its pid after DUR ("slow request started" on stdout first)
//	/exit?code=N            answers, then exits with status N
//	/ipc?what=WHAT          writes on the IPC channel, then answers "ok":
//	                        garbage    lines that are not JSON, or not messages
//	                        bigline    one line of mb=N MiB (default 10), no JSON
//	                        badutf8    lines with invalid UTF-8, JSON or not
//	                        flood      n=N (default 10000) messages in one write
//	                        restart    {"event":"request-restart"}
//	                        close      closes its end of the channel
//	/spawn?n=N[&exit=CODE]  starts N children (DM_FAULT=child) in its process
//	                        group, answers their pids, then exits with CODE if given
//
// It drains on SIGTERM, {"event":"disconnect"} or EOF on its channel: stop
// accepting, answer every accepted connection, exit 0.
func rawWorker() int {
	lf := os.NewFile(3, "listener")
	ln, err := net.FileListener(lf) // a close-on-exec duplicate
	lf.Close()
	if err != nil {
		fmt.Fprintf(os.Stderr, "raw worker: fd 3: %v\n", err)
		return 3
	}
	fd, err := strconv.Atoi(os.Getenv("NODE_CHANNEL_FD"))
	if err != nil {
		fmt.Fprintf(os.Stderr, "raw worker: NODE_CHANNEL_FD=%q\n", os.Getenv("NODE_CHANNEL_FD"))
		return 3
	}
	cf := os.NewFile(uintptr(fd), "ipc")
	c, err := net.FileConn(cf)
	cf.Close()
	if err != nil {
		fmt.Fprintf(os.Stderr, "raw worker: IPC fd %d: %v\n", fd, err)
		return 3
	}
	for _, k := range []string{"LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES", "NODE_CHANNEL_FD", "NODE_CHANNEL_SERIALIZATION_MODE"} {
		os.Unsetenv(k) // the children inherit none of it
	}
	w := &raw{ipc: c.(*net.UnixConn), drain: make(chan struct{}), deaf: deaf()}
	if w.deaf {
		signal.Ignore(syscall.SIGTERM)
	} else {
		term := make(chan os.Signal, 1)
		signal.Notify(term, syscall.SIGTERM)
		go func() { <-term; w.drained() }()
	}
	go w.readIPC()
	select { // a drain during the boot ends the worker at once
	case <-time.After(faultBoot()):
	case <-w.drain:
		return 0
	}

	var busy sync.WaitGroup
	srv := &http.Server{Handler: w.mux(), ConnState: func(_ net.Conn, s http.ConnState) {
		switch s {
		case http.StateNew:
			busy.Add(1)
		case http.StateHijacked, http.StateClosed:
			busy.Done()
		}
	}}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	if err := w.write([]byte(`{"event":"ready"}` + "\n")); err != nil {
		fmt.Fprintf(os.Stderr, "raw worker: ready: %v\n", err)
		return 3
	}
	select {
	case <-w.drain:
	case err := <-served:
		fmt.Fprintf(os.Stderr, "raw worker: %v\n", err)
		return 1
	}
	// As the systemd worker: stop accepting, let Serve return, answer
	// every accepted connection, then shut down.
	ln.Close()
	<-served
	busy.Wait()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	_ = srv.Shutdown(ctx)
	return 0
}

type raw struct {
	ipc       *net.UnixConn
	wmu       sync.Mutex
	closed    atomic.Bool // the worker closed its end on purpose
	deaf      bool
	drain     chan struct{}
	drainOnce sync.Once
}

func (w *raw) drained() { w.drainOnce.Do(func() { close(w.drain) }) }

// readIPC drains on {"event":"disconnect"} or EOF, unless the worker
// closed the channel itself or is deaf.
func (w *raw) readIPC() {
	buf := make([]byte, 4096)
	var pending []byte
	for {
		n, err := w.ipc.Read(buf)
		pending = append(pending, buf[:n]...)
		if bytes.Contains(pending, []byte(`"disconnect"`)) && !w.deaf {
			w.drained()
		}
		if i := bytes.LastIndexByte(pending, '\n'); i >= 0 {
			pending = pending[i+1:]
		}
		if err != nil {
			if !w.closed.Load() && !w.deaf {
				w.drained()
			}
			return
		}
	}
}

func (w *raw) write(b []byte) error {
	w.wmu.Lock()
	defer w.wmu.Unlock()
	if w.closed.Load() {
		return errors.New("channel closed by this worker")
	}
	w.ipc.SetWriteDeadline(time.Now().Add(20 * time.Second))
	_, err := w.ipc.Write(b)
	return err
}

func (w *raw) mux() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(rw http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(rw, "%d", os.Getpid())
	})
	mux.HandleFunc("/slow", func(rw http.ResponseWriter, r *http.Request) {
		d, err := time.ParseDuration(r.URL.Query().Get("d"))
		if err != nil {
			d = time.Second
		}
		fmt.Println("slow request started")
		time.Sleep(d)
		fmt.Fprintf(rw, "%d", os.Getpid())
	})
	mux.HandleFunc("/exit", func(rw http.ResponseWriter, r *http.Request) {
		code, _ := strconv.Atoi(r.URL.Query().Get("code"))
		answerThenExit(rw, fmt.Sprint(os.Getpid()), code)
	})
	mux.HandleFunc("/ipc", func(rw http.ResponseWriter, r *http.Request) {
		if err := w.ipcFault(r); err != nil {
			http.Error(rw, err.Error(), http.StatusInternalServerError)
			return
		}
		fmt.Fprint(rw, "ok")
	})
	mux.HandleFunc("/spawn", func(rw http.ResponseWriter, r *http.Request) {
		n, _ := strconv.Atoi(r.URL.Query().Get("n"))
		pids, err := spawnChildren(n)
		if err != nil {
			http.Error(rw, err.Error(), http.StatusInternalServerError)
			return
		}
		if code := r.URL.Query().Get("exit"); code != "" {
			c, _ := strconv.Atoi(code)
			answerThenExit(rw, pids, c)
		}
		fmt.Fprint(rw, pids)
	})
	return mux
}

// answerThenExit sends a whole response, then ends the process: the
// client has its answer before the connection dies with the worker.
func answerThenExit(rw http.ResponseWriter, body string, code int) {
	rw.Header().Set("Connection", "close")
	rw.Header().Set("Content-Length", strconv.Itoa(len(body)))
	rw.WriteHeader(http.StatusOK)
	fmt.Fprint(rw, body)
	rw.(http.Flusher).Flush()
	os.Exit(code)
}

func (w *raw) ipcFault(r *http.Request) error {
	q := r.URL.Query()
	switch q.Get("what") {
	case "garbage":
		return w.write([]byte("not json at all\n{\"event\":\n\n[1,2,3]\n{\"event\":42}\n\"no such thing\"\nnull\n\x00\x01\x02\n"))
	case "bigline":
		mb, err := strconv.Atoi(q.Get("mb"))
		if err != nil {
			mb = 10
		}
		return w.write(append(bytes.Repeat([]byte("x"), mb<<20), '\n'))
	case "badutf8":
		return w.write([]byte("\xff\xfe\xfd\n{\"event\":\"\xc3\x28\"}\n\"\xed\xa0\x80\"\n{\"event\":\"ready\xff\"}\n"))
	case "flood":
		n, err := strconv.Atoi(q.Get("n"))
		if err != nil {
			n = 10000
		}
		var b bytes.Buffer
		for i := range n {
			fmt.Fprintf(&b, "{\"event\":\"noise\",\"i\":%d}\n", i)
		}
		return w.write(b.Bytes())
	case "restart":
		return w.write([]byte(`{"event":"request-restart"}` + "\n"))
	case "close":
		// Node's process.disconnect(): the worker closes its end and
		// goes on serving.
		w.wmu.Lock()
		defer w.wmu.Unlock()
		w.closed.Store(true)
		return w.ipc.Close()
	}
	return fmt.Errorf("what=%q", q.Get("what"))
}

// spawnChildren starts n sleeping children that stay in this worker's
// process group, and returns their pids, space-separated.
func spawnChildren(n int) (string, error) {
	self, err := os.Executable()
	if err != nil {
		return "", err
	}
	var pids []string
	for range n {
		cmd := exec.Command(self)
		cmd.Env = append(os.Environ(), faultEnv+"=child")
		if err := cmd.Start(); err != nil {
			return "", err
		}
		pids = append(pids, strconv.Itoa(cmd.Process.Pid))
		go cmd.Wait() // reap it if it dies while this worker lives
	}
	return strings.Join(pids, " "), nil
}
