// Command hello is the example worker: an HTTP server written with the
// worker API of sockets/worker. It takes its listener from the master,
// reports ready once it accepts, asks for its own replacement on
// /restart, and drains without dropping a request.
//
//	HELLO_BOOT_DELAY   time to wait before serving (default 0), to show a slow boot
//	HELLO_WORK         time each request takes (default 0)
//	HELLO_GRACE        drain grace: how long it keeps answering kept-alive
//	                   connections (with "Connection: close") once drained
//	                   (default 2s, the worker API's)
//	HELLO_LISTENER     listener name (default: the first one)
//	HELLO_REUSEPORT    ADDR: bind ADDR itself with SO_REUSEPORT instead of
//	                   using an inherited listener (a baseline for benchmarks:
//	                   N copies run without dutchmaster, each with its own
//	                   accept queue)
//
// Run it under dutchmaster:
//
//	dutchmaster --listen http=tcp://127.0.0.1:8080 -- hello
package main

import (
	"context"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"strconv"
	"syscall"
	"time"

	"github.com/dutchmaster/dutchmaster/sockets/worker"
	"golang.org/x/sys/unix"
)

func main() {
	log.SetFlags(0)
	log.SetPrefix(fmt.Sprintf("hello[%d] ", os.Getpid()))
	boot := envDuration("HELLO_BOOT_DELAY")
	work := envDuration("HELLO_WORK")
	grace := envDuration("HELLO_GRACE")

	reuseport := os.Getenv("HELLO_REUSEPORT")
	var l net.Listener
	var err error
	if reuseport != "" {
		l, err = listenReusePort(reuseport)
	} else {
		l, err = listener(os.Getenv("HELLO_LISTENER"))
	}
	if err != nil {
		log.Fatal(err)
	}
	time.Sleep(boot) // a real application would load its code and data here
	if reuseport != "" {
		// Nobody to report readiness to: say it on stderr (dmbench waits
		// for this line).
		log.Printf("serving on %s with SO_REUSEPORT", l.Addr())
	}

	started := time.Now()
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(work)
		w.Header().Set("X-Worker-Pid", strconv.Itoa(os.Getpid())) // load tests tell workers apart by it
		fmt.Fprintf(w, "hello from worker %s (pid %d, generation %s, up %s)\n",
			os.Getenv("DUTCHMASTER_WORKER_ID"), os.Getpid(), os.Getenv("DUTCHMASTER_GENERATION"),
			time.Since(started).Round(time.Millisecond))
	})
	mux.HandleFunc("/restart", func(w http.ResponseWriter, r *http.Request) {
		if err := worker.RequestRestart(); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		fmt.Fprintf(w, "worker %d asked for its replacement\n", os.Getpid())
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	if err := worker.ServeHTTPWith(srv, l, worker.HTTPOptions{Grace: grace}); err != nil {
		log.Fatal(err)
	}
	log.Print("drained")
}

// listener returns the named listener, or the first one.
func listener(name string) (net.Listener, error) {
	if name != "" {
		return worker.Listener(name)
	}
	socks, err := worker.Sockets()
	if err != nil {
		return nil, err
	}
	for _, s := range socks {
		if s.Listener != nil {
			return s.Listener, nil
		}
	}
	return nil, fmt.Errorf("no stream listener among the %d inherited sockets", len(socks))
}

// listenReusePort binds addr with SO_REUSEPORT, so that several copies of
// this program share the port, each with its own accept queue.
func listenReusePort(addr string) (net.Listener, error) {
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		if err := c.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
		}); err != nil {
			return err
		}
		return serr
	}}
	return lc.Listen(context.Background(), "tcp", addr)
}

func envDuration(key string) time.Duration {
	v := os.Getenv(key)
	if v == "" {
		return 0
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		log.Fatalf("%s=%q: %v", key, v, err)
	}
	return d
}
