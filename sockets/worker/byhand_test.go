package worker

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"

	"github.com/dutchmaster/dutchmaster/sockets/testproc"
)

func init() {
	// byhand: an application run without a supervisor: no LISTEN_FDS, no
	// IPC channel, no NOTIFY_SOCKET. It listens by itself, as the package
	// tells it to, and serves until SIGTERM.
	testproc.Register("byhand", func([]string) int {
		l, err := Listener("web")
		if !errors.Is(err, ErrNotActivated) {
			fmt.Printf("Listener(web) without a supervisor: %v, want ErrNotActivated\n", err)
			return 1
		}
		if err := Ready(); err != nil {
			fmt.Printf("Ready without a supervisor: %v, want nil\n", err)
			return 1
		}
		l, err = net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			fmt.Println(err)
			return 1
		}
		fmt.Println("listening", l.Addr())
		srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "by hand\n") })}
		if err := ServeHTTP(srv, l); err != nil {
			fmt.Println(err)
			return 1
		}
		fmt.Println("drained")
		return 0
	})
}

// TestRunByHand: without a supervisor, Listener says ErrNotActivated, the
// application listens by itself, ServeHTTP serves on that listener (Ready
// does nothing) and SIGTERM drains it.
func TestRunByHand(t *testing.T) {
	cmd := testproc.Command(t, "byhand")
	var env []string
	for _, kv := range cmd.Env {
		k, _, _ := strings.Cut(kv, "=")
		switch k {
		case "LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES", "NODE_CHANNEL_FD", "NOTIFY_SOCKET":
			continue
		}
		env = append(env, kv)
	}
	cmd.Env = env
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	lines := bufio.NewScanner(stdout)
	if !lines.Scan() || !strings.HasPrefix(lines.Text(), "listening ") {
		t.Fatalf("the application did not listen by itself: %q", lines.Text())
	}
	addr := strings.TrimPrefix(lines.Text(), "listening ")
	resp, err := http.Get("http://" + addr + "/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "by hand\n" {
		t.Fatalf("GET: %q", body)
	}
	cmd.Process.Signal(syscall.SIGTERM)
	if !lines.Scan() || lines.Text() != "drained" {
		t.Fatalf("after SIGTERM: %q", lines.Text())
	}
	io.Copy(io.Discard, stdout)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("the application: %v", err)
	}
}

// TestBuildsOnOtherPlatforms: the worker API compiles wherever a Go
// application may run, not only where the master does; there, no
// supervisor passes sockets and the application listens by itself.
func TestBuildsOnOtherPlatforms(t *testing.T) {
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Fatal("no go tool in PATH")
	}
	for _, p := range []string{"windows/amd64", "darwin/arm64", "freebsd/amd64"} {
		goos, goarch, _ := strings.Cut(p, "/")
		cmd := exec.Command(goTool, "build", "-o", "/dev/null", ".")
		cmd.Env = append(os.Environ(), "GOOS="+goos, "GOARCH="+goarch, "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("GOOS=%s GOARCH=%s go build ./sockets/worker: %v\n%s", goos, goarch, err, out)
		}
	}
}
