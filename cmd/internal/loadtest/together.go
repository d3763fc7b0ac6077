package loadtest

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// OpenTogether opens n connections to addr at once, then sends one
// request on each, and returns per connection the pid of the worker that
// answered it: where a balanced listener put each of n keep-alive
// connections opened together.
func OpenTogether(addr string, n int, timeout time.Duration) ([]int, error) {
	conns := make([]net.Conn, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { conns[i], errs[i] = net.DialTimeout("tcp", addr, timeout) })
	}
	wg.Wait()
	defer func() {
		for _, c := range conns {
			if c != nil {
				c.Close()
			}
		}
	}()
	for i, err := range errs {
		if err != nil {
			return nil, fmt.Errorf("connection %d: %w", i, err)
		}
	}
	pids := make([]int, n)
	for i, c := range conns {
		c.SetDeadline(time.Now().Add(timeout))
		wg.Go(func() { pids[i], errs[i] = AskPID(c, "/", false) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			return nil, fmt.Errorf("request on connection %d: %w", i, err)
		}
	}
	return pids, nil
}

// AskPID sends GET path on c and returns the pid of the worker that
// answered it: ServedBy's, or an answer that is the pid alone (the test
// workers' and the Node.js test apps'). With close, the request asks for
// the connection to be closed after it.
func AskPID(c net.Conn, path string, close bool) (int, error) {
	req := "GET " + path + " HTTP/1.1\r\nHost: loadtest\r\n"
	if close {
		req += "Connection: close\r\n"
	}
	if _, err := io.WriteString(c, req+"\r\n"); err != nil {
		return 0, err
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, err
	}
	if pid := ServedBy(resp.Header, body); pid != 0 {
		return pid, nil
	}
	if pid, err := strconv.Atoi(string(bytes.TrimSpace(body))); err == nil && pid > 0 {
		return pid, nil
	}
	return 0, fmt.Errorf("no worker pid in the answer (status %d, %q)", resp.StatusCode, body)
}
