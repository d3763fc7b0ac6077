package osproc

import (
	"github.com/dutchmaster/dutchmaster/sockets"
	"github.com/dutchmaster/dutchmaster/sockets/nodecluster"
)

// A Node.js cluster worker's session (the primary's side of its channel)
// is handed over and adopted through package nodecluster.

// sessionState is a session's handed state.
type sessionState = nodecluster.SessionState

// handoverSession is s's state, or an error while it cannot be handed
// over (a handle waiting for its acknowledgement: nodecluster.ErrBusy).
func handoverSession(s *nodecluster.Session) (*sessionState, error) {
	st, err := s.Handover()
	if err != nil {
		return nil, err
	}
	return &st, nil
}

// adoptSession takes over a handed-over session on the adopted channel.
func adoptSession(ch *sockets.Channel, reg *nodecluster.Registry, w nodecluster.Worker, st *sessionState) (*nodecluster.Session, error) {
	return nodecluster.AdoptSession(ch, reg, w, *st), nil
}
