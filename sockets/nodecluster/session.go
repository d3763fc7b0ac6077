package nodecluster

import (
	"encoding/json"
	"errors"
	"os"
	"sync"
)

// Sender writes one JSON line on a worker's IPC channel, with a descriptor
// attached to the line's first byte (SCM_RIGHTS, in the same write) for
// SendWithFD. *sockets.Channel is one; writes must not interleave.
type Sender interface {
	Send(v any) error
	SendWithFD(v any, f *os.File) error
}

// Kind sorts what a line from a worker meant.
type Kind int

// The kinds of Event.
const (
	// KindMessage: not one of Node's internal messages (process.send, or
	// anything else a program wrote): Event.Line is for the supervisor.
	KindMessage Kind = iota
	// KindOnline: the worker's cluster code runs (its first online).
	KindOnline
	// KindListening: the worker's first server listens: it is ready.
	KindListening
	// KindServed: a queryServer was answered with Event.Share (its Errno
	// is the error the worker's listen() now fails with, or 0).
	KindServed
	// KindExitedAfterDisconnect: the worker disconnects itself
	// (cluster.worker.disconnect()); it was acknowledged, and it exits
	// once its servers are closed.
	KindExitedAfterDisconnect
	// KindHandleLost: the worker refused a handle more often than
	// MaxHandleRetransmissions allows; it was given up (Event.Key).
	KindHandleLost
	// KindInternal: any other internal message, handled or ignored as
	// Node's primary does (Event.Act names it): handle acknowledgements,
	// close, later listening messages, a query after the disconnect.
	KindInternal
)

var kindNames = [...]string{"message", "online", "listening", "served", "exitedAfterDisconnect", "handle lost", "internal"}

func (k Kind) String() string {
	if int(k) < len(kindNames) {
		return kindNames[k]
	}
	return "kind?"
}

// Event is what one line from the worker meant.
type Event struct {
	Kind Kind
	// Line is the line itself, for KindMessage.
	Line []byte
	// Act is the cluster act or internal command of the line.
	Act string
	// Key is the handle key of a query, close or lost handle.
	Key string
	// Query and Share are the query and its answer, for KindServed.
	Query Query
	Share Share
	// Err is set when an answer could not be sent (the channel is then
	// unusable: every later send fails), or a query made no sense.
	Err error
}

// Session is the cluster primary's side of one worker's IPC channel: it
// reads what the worker says (Receive), answers it, and tells the worker
// to disconnect (Disconnect). Sends keep Node's order rules: every message
// after a handle waits for the worker's NODE_HANDLE_ACK.
//
// Receive is for the one goroutine that reads the channel; Disconnect and
// the accessors are safe from any goroutine.
type Session struct {
	out Sender
	reg *Registry

	mu            sync.Mutex
	seq           int64
	waiting       *outgoing  // a handle sent and not yet acknowledged
	queue         []outgoing // what waits for that acknowledgement
	broken        error      // the first failed send: nothing is sent after it
	online        bool
	listening     bool
	disconnecting bool // the master sent disconnect
	leaving       bool // the worker sent exitedAfterDisconnect
	// metricsWait are the prom-client metrics requests awaiting the
	// worker's answer (promclient.go), by request id.
	metricsWait map[int64]chan metricsReply
}

type outgoing struct {
	msg    any
	file   *os.File
	key    string
	resent int
}

// NewSession starts the primary's side of a worker's channel: out writes
// to the worker, reg answers its queries.
func NewSession(out Sender, reg *Registry) *Session {
	return &Session{out: out, reg: reg}
}

// Online reports whether the worker has said online, i.e. runs Node's
// cluster worker code and understands Disconnect.
func (s *Session) Online() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.online
}

// Disconnect tells the worker to stop gracefully: {"act":"disconnect"}.
// Node's worker then closes its servers, lets in-flight requests finish,
// disconnects its channel, and exits once nothing is left to do. It is
// sent once; later calls do nothing. After it, queries are ignored, as
// Node's primary ignores them. The error is that of the send (nil when the
// message waits for a handle's acknowledgement).
func (s *Session) Disconnect() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.disconnecting {
		return nil
	}
	s.disconnecting = true
	return s.send(outgoing{msg: clusterAct{Cmd: CmdCluster, Act: ActDisconnect, Seq: s.nextSeq()}})
}

// Receive handles one line the worker wrote (without its newline) and
// says what it meant. Internal messages are answered here; everything else
// is KindMessage, for the caller.
func (s *Session) Receive(line []byte) Event {
	if ev, ok := s.metricsAnswer(line); ok {
		return ev // an answer to the master's metrics request (promclient.go)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.receive(line)
}

func (s *Session) receive(line []byte) Event {
	m, cmd, ok := parseInternal(line)
	if !ok {
		return Event{Kind: KindMessage, Line: line}
	}
	switch cmd {
	case CmdCluster:
		return s.cluster(m)
	case CmdHandleAck:
		return s.acknowledged()
	case CmdHandleNack:
		return s.refused()
	case CmdHandle:
		// The worker sent a handle (process.send(msg, socket)). The
		// channel reads without ancillary data, so the kernel closed the
		// descriptor; acknowledge it all the same, or the worker holds
		// every later message back, and pass the message on.
		err := s.write(outgoing{msg: handleAnswer{Cmd: CmdHandleAck}}, false)
		if len(m.Msg) == 0 {
			return Event{Kind: KindInternal, Act: cmd, Err: err}
		}
		ev := s.receive(m.Msg)
		ev.Err = errors.Join(err, ev.Err)
		return ev
	}
	return Event{Kind: KindInternal, Act: cmd}
}

// cluster handles a NODE_CLUSTER message, as lib/internal/cluster/primary.js.
func (s *Session) cluster(m incoming) Event {
	ev := Event{Kind: KindInternal, Act: m.Act}
	switch m.Act {
	case ActOnline:
		if !s.online {
			s.online = true
			ev.Kind = KindOnline
		}
	case ActListening:
		if !s.listening {
			s.listening = true
			ev.Kind = KindListening
		}
	case ActClose:
		_ = json.Unmarshal(m.Key, &ev.Key)
	case ActExitedAfterDisconnect:
		s.leaving = true
		ev.Kind = KindExitedAfterDisconnect
		ev.Err = s.send(outgoing{msg: clusterAck{Cmd: CmdCluster, Ack: m.Seq, Seq: s.nextSeq()}})
	case ActQueryServer:
		if s.disconnecting || s.leaving {
			return ev // Node's primary: "Stop processing if worker already disconnecting"
		}
		return s.serve(m)
	}
	return ev
}

// serve answers a queryServer: the shared socket with NODE_HANDLE, or the
// errno without a handle (the worker's listen() then fails with it).
func (s *Session) serve(m incoming) Event {
	q, err := parseQuery(m)
	var sh Share
	if err != nil {
		sh = Share{Errno: UVEINVAL, Err: err, Data: q.Data}
	} else {
		sh = s.reg.Share(q)
	}
	data := sh.Data
	if len(data) == 0 {
		data = json.RawMessage("null")
	}
	reply := clusterReply{Cmd: CmdCluster, Errno: sh.Errno, Key: q.Key, Ack: m.Seq, Data: data, Seq: s.nextSeq()}
	o := outgoing{msg: reply, key: q.Key}
	if sh.File != nil {
		o.msg, o.file = handleMessage{Cmd: CmdHandle, Type: sh.Type, Msg: reply}, sh.File
	}
	return Event{Kind: KindServed, Act: ActQueryServer, Key: q.Key, Query: q, Share: sh, Err: s.send(o)}
}

// acknowledged releases the messages held back by a handle.
func (s *Session) acknowledged() Event {
	ev := Event{Kind: KindInternal, Act: CmdHandleAck}
	if s.waiting == nil {
		return ev // nothing was waiting: a stray ACK
	}
	ev.Key = s.waiting.key
	s.waiting = nil
	ev.Err = s.flush()
	return ev
}

// refused sends the waiting handle again, or gives it up after
// MaxHandleRetransmissions resends, as Node does.
func (s *Session) refused() Event {
	ev := Event{Kind: KindInternal, Act: CmdHandleNack}
	w := s.waiting
	if w == nil {
		return ev
	}
	ev.Key = w.key
	s.waiting = nil
	if w.resent >= MaxHandleRetransmissions {
		ev.Kind = KindHandleLost
		ev.Err = s.flush()
		return ev
	}
	w.resent++
	ev.Err = s.write(*w, true)
	return ev
}

// send writes o now, or queues it behind a handle that waits for its
// acknowledgement.
func (s *Session) send(o outgoing) error {
	if s.broken != nil {
		return s.broken
	}
	if s.waiting != nil {
		s.queue = append(s.queue, o)
		return nil
	}
	return s.write(o, true)
}

// flush writes what was queued, up to the next handle.
func (s *Session) flush() error {
	for len(s.queue) > 0 && s.waiting == nil {
		o := s.queue[0]
		s.queue = s.queue[1:]
		if err := s.write(o, true); err != nil {
			return err
		}
	}
	return nil
}

// write puts o on the channel; a handle then waits for its answer (track).
// A failed send ends the session's sending: the framing may be lost, and a
// worker that misses an answer is of no use anyway.
func (s *Session) write(o outgoing, track bool) error {
	if s.broken != nil {
		return s.broken
	}
	var err error
	if o.file != nil {
		err = s.out.SendWithFD(o.msg, o.file)
	} else {
		err = s.out.Send(o.msg)
	}
	if err != nil {
		s.broken, s.waiting, s.queue = err, nil, nil
		return err
	}
	if o.file != nil && track {
		s.waiting = &o
	}
	return nil
}

func (s *Session) nextSeq() int64 {
	n := s.seq
	s.seq++
	return n
}
