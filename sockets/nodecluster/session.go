package nodecluster

import (
	"encoding/json"
	"errors"
	"os"
	"slices"
	"sync"
	"sync/atomic"
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
	out    Sender
	reg    *Registry
	worker Worker

	// handovers counts the connections handed over (round-robin) and not
	// yet answered; the accept loop reads it without the lock.
	handovers atomic.Int32

	mu            sync.Mutex
	handed        map[int64]*handover // by the newconn's seq
	later         []func()            // what to do once mu is released
	gone          bool                // Close: the worker's channel ended
	seq           int64
	waiting       *outgoing  // a handle sent and not yet acknowledged
	queue         []outgoing // what waits for that acknowledgement
	broken        error      // the first failed send: nothing is sent after it
	online        bool
	listening     bool
	disconnecting bool     // the master sent disconnect
	leaving       bool     // the worker sent exitedAfterDisconnect
	keys          []string // the servers the worker was given and has not closed
	// metricsWait are the prom-client metrics requests awaiting the
	// worker's answer (promclient.go), by request id.
	metricsWait map[int64]chan metricsReply
}

type outgoing struct {
	msg    any
	file   *os.File
	key    string
	resent int
	// newconn: a handover's message, whose seq finds it in handed.
	newconn bool
	seq     int64
}

// NewSession starts the primary's side of a worker's channel: out writes
// to the worker, reg answers its queries (as for a worker of slot 0 that
// asks for shared handles).
func NewSession(out Sender, reg *Registry) *Session {
	return NewWorkerSession(out, reg, Worker{SchedNone: true})
}

// NewWorkerSession is NewSession for worker w: reg answers its queries
// for w's slot, or by round-robin for w's id, as reg balances. Call Close
// once the channel has ended.
func NewWorkerSession(out Sender, reg *Registry, w Worker) *Session {
	return &Session{out: out, reg: reg, worker: w, handed: map[int64]*handover{}}
}

// unlock releases mu, then does what was left for later (calls into the
// registry and other sessions, which must not happen under mu).
func (s *Session) unlock() {
	later := s.later
	s.later = nil
	s.mu.Unlock()
	for _, f := range later {
		f()
	}
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
	defer s.unlock()
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
	defer s.unlock()
	return s.receive(line)
}

// Close ends the session once the worker's channel has ended: the
// connections handed to the worker and not answered go to other workers,
// and the worker leaves the round-robin.
func (s *Session) Close() {
	s.mu.Lock()
	s.gone = true
	s.waiting, s.queue = nil, nil
	hs := s.takeHandovers()
	s.unlock()
	for _, d := range s.reg.leave(s, "") {
		d.kick()
	}
	for _, h := range hs {
		h.retry(s)
	}
}

// dropHandovers closes the connections the session still holds: nobody
// will take them (the registry is closing).
func (s *Session) dropHandovers() {
	s.mu.Lock()
	hs := s.takeHandovers()
	s.mu.Unlock()
	for _, h := range hs {
		h.file.Close()
	}
}

// takeHandovers empties the handed connections. Under mu.
func (s *Session) takeHandovers() []*handover {
	hs := make([]*handover, 0, len(s.handed))
	for seq, h := range s.handed {
		hs = append(hs, h)
		delete(s.handed, seq)
	}
	s.handovers.Store(0)
	return hs
}

// offer hands a connection to the worker as key's newconn; false when the
// worker cannot take one now (gone, leaving, or holding maxHandovers).
func (s *Session) offer(h *handover, key string) bool {
	s.mu.Lock()
	defer s.unlock()
	if s.gone || s.broken != nil || s.disconnecting || s.leaving || len(s.handed) >= maxHandovers {
		return false
	}
	seq := s.nextSeq()
	s.handed[seq] = h
	s.handovers.Add(1)
	msg := handleMessage{Cmd: CmdHandle, Type: TypeNetNative, Msg: newconnMessage{Cmd: CmdCluster, Act: ActNewconn, Key: key, Seq: seq}}
	// A failed send gives back this handover and the queued ones, to be
	// offered to the others once mu is released (write).
	_ = s.send(outgoing{msg: msg, file: h.file, key: key, newconn: true, seq: seq})
	return true
}

// answered handles the worker's answer to a newconn: {ack: seq, accepted}.
func (s *Session) answered(m incoming) Event {
	ev := Event{Kind: KindInternal, Act: ActNewconn}
	seq, ok := jsInt(m.Ack)
	h := s.handed[int64(seq)]
	if !ok || h == nil {
		return ev // an answer to nothing of ours
	}
	s.giveBack(int64(seq), !m.Accepted)
	return ev
}

// giveBack forgets a handover: the worker took it (the master's copy is
// closed) or not (it goes to another worker, once mu is released).
func (s *Session) giveBack(seq int64, retry bool) {
	h := s.handed[seq]
	if h == nil {
		return
	}
	delete(s.handed, seq)
	s.handovers.Add(-1)
	if retry {
		s.later = append(s.later, func() { h.retry(s) })
		return
	}
	h.file.Close()
	s.later = append(s.later, h.d.kick)
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
		if ev.Key != "" {
			key := ev.Key
			s.keys = slices.DeleteFunc(s.keys, func(k string) bool { return k == key })
			s.later = append(s.later, func() {
				for _, d := range s.reg.leave(s, key) {
					d.kick()
				}
			})
		}
	case "":
		if len(m.Ack) > 0 {
			return s.answered(m)
		}
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
		sh = s.reg.serve(q, s, s.worker)
	}
	if sh.Errno == 0 && !slices.Contains(s.keys, q.Key) {
		s.keys = append(s.keys, q.Key)
	}
	data := sh.Data
	if len(data) == 0 {
		data = json.RawMessage("null")
	}
	reply := clusterReply{Cmd: CmdCluster, Errno: sh.Errno, Key: q.Key, Ack: m.Seq, Data: data, Sockname: sh.Sockname, Seq: s.nextSeq()}
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
		if w.newconn {
			s.giveBack(w.seq, true) // the connection goes to another worker
		}
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
		queued := s.queue
		s.broken, s.waiting, s.queue = err, nil, nil
		// Nothing more reaches the worker. The connections that never
		// left (this message, the queued ones) go to other workers. The
		// ones already written reached it, and it may be serving them:
		// they stay handed until it answers or its channel ends (Close),
		// or two processes would serve one connection.
		if o.newconn {
			s.giveBack(o.seq, true)
		}
		for _, q := range queued {
			if q.newconn {
				s.giveBack(q.seq, true)
			}
		}
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
