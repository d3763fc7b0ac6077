package osproc

import (
	"errors"
	"fmt"
	"os"
	"os/user"
	"strconv"
	"syscall"
)

// The errors of Credential, each wrapped with the name it is about.
var (
	ErrNoSuchUser  = errors.New("no such user")
	ErrNoSuchGroup = errors.New("no such group")
	// ErrNotRoot: only a master running as root can start its workers as
	// another user or group.
	ErrNotRoot = errors.New("running workers as another user needs a master started as root")
)

// Credential resolves a user and a group (names or numbers; either may be
// empty) into the Config.Credential that runs workers as them; nil when
// both are empty. The group defaults to the user's primary group.
func Credential(name, group string) (*syscall.Credential, error) {
	if name == "" && group == "" {
		return nil, nil
	}
	cred := &syscall.Credential{Uid: uint32(os.Getuid()), Gid: uint32(os.Getgid()), NoSetGroups: true}
	if name != "" {
		u, err := byNameOrNumber(name, user.Lookup, user.LookupId)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, ErrNoSuchUser)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		cred.Uid, cred.Gid = uint32(uid), uint32(gid)
	}
	if group != "" {
		g, err := byNameOrNumber(group, user.LookupGroup, user.LookupGroupId)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", group, ErrNoSuchGroup)
		}
		gid, _ := strconv.Atoi(g.Gid)
		cred.Gid = uint32(gid)
	}
	if os.Geteuid() != 0 && (int(cred.Uid) != os.Getuid() || int(cred.Gid) != os.Getgid()) {
		return nil, ErrNotRoot
	}
	return cred, nil
}

// byNameOrNumber looks a user or a group up by name, then, failing that,
// by number: "www-data" and "33" name the same account.
func byNameOrNumber[T any](s string, byName, byNumber func(string) (T, error)) (T, error) {
	v, err := byName(s)
	if err != nil {
		v, err = byNumber(s)
	}
	return v, err
}
