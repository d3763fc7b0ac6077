package osproc

import (
	"encoding/json"
	"errors"

	"github.com/dutchmaster/dutchmaster/sockets"
	"github.com/dutchmaster/dutchmaster/sockets/nodecluster"
)

// This file is the one place where a Node.js cluster worker's session (the
// primary's side of its channel) is handed over and adopted, through
// package nodecluster's (*Session).Handover and AdoptSession. Until those
// are built, a runtime with a Node.js cluster worker refuses the handover.

// sessionState is a session's handed state (nodecluster.SessionState).
type sessionState = json.RawMessage

// errSessionHandover: the session's handover is not built.
var errSessionHandover = errors.New("a Node.js cluster session cannot be handed over yet")

// handoverSession is s.Handover(): s's state, or an error while it cannot
// be handed over (a handle waiting for its acknowledgement: retry).
func handoverSession(s *nodecluster.Session) (*sessionState, error) {
	return nil, errSessionHandover
}

// adoptSession is nodecluster.AdoptSession(ch, reg, w, *st).
func adoptSession(ch *sockets.Channel, reg *nodecluster.Registry, w nodecluster.Worker, st *sessionState) (*nodecluster.Session, error) {
	return nil, errSessionHandover
}
