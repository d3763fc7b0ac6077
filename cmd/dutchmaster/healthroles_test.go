package main

import (
	"fmt"
	"net/http"
	"os"
	"strconv"
	"sync/atomic"
)

// The api worker's misbehaviours for the health tests (health_test.go):
//
//	/hang   from this request on, every request of the worker blocks for
//	        good, each first printing "hung request" (with
//	        --log-worker-output the master logs it, so the test counts the
//	        requests that reached the hung worker)
//	/grow?mb=N  the worker allocates and touches N MiB more, and keeps them
//	DM_TEST_BALLAST_MB=N  the worker holds N MiB from its start

var hung atomic.Bool

// hangable wraps a handler with /hang.
func hangable(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/hang" {
			hung.Store(true)
		}
		if hung.Load() {
			fmt.Println("hung request")
			select {} // the handler path is stuck: no more heartbeats
		}
		next.ServeHTTP(w, r)
	})
}

// held keeps what grow and ballast allocated.
var held [][]byte

func grow(w http.ResponseWriter, r *http.Request) {
	mb, err := strconv.Atoi(r.URL.Query().Get("mb"))
	if err != nil || mb <= 0 {
		http.Error(w, "want mb=N", http.StatusBadRequest)
		return
	}
	held = append(held, touched(mb))
	fmt.Fprintf(w, "%d", os.Getpid())
}

func ballast() {
	if mb, err := strconv.Atoi(os.Getenv("DM_TEST_BALLAST_MB")); err == nil && mb > 0 {
		held = append(held, touched(mb))
	}
}

// touched is mb MiB, every page written, so that it is resident.
func touched(mb int) []byte {
	b := make([]byte, mb<<20)
	for i := 0; i < len(b); i += 4096 {
		b[i] = 1
	}
	return b
}
