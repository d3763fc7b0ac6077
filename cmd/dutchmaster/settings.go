package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/dutchmaster/dutchmaster"
	"github.com/dutchmaster/dutchmaster/fsm"
)

// settings are the flags and the config file's keys, with the same names.
// Values stay text until resolve, so both sources are checked by one code
// path and every error names the key.
type settings struct {
	Workers         string   `yaml:"workers"`
	Listen          []string `yaml:"listen"`
	RestartSignal   string   `yaml:"restart-signal"`
	StopSignal      string   `yaml:"stop-signal"`
	KillTimeout     string   `yaml:"kill-timeout"`
	Ready           string   `yaml:"ready"`
	ReadyTimeout    string   `yaml:"ready-timeout"`
	Drain           string   `yaml:"drain"`
	MaxSurge        string   `yaml:"max-surge"`
	Env             []string `yaml:"env"`
	Dir             string   `yaml:"dir"`
	BeforeFork      string   `yaml:"before-fork"`
	LogFormat       string   `yaml:"log-format"`
	LogLevel        string   `yaml:"log-level"`
	LogWorkerOutput string   `yaml:"log-worker-output"`
	Command         []string `yaml:"command"`
}

// defaults are the values in force when neither a flag nor the config
// file sets a key.
func defaults() settings {
	return settings{
		Workers: "2", RestartSignal: "SIGUSR2", StopSignal: "SIGTERM", KillTimeout: "30s",
		Ready: "auto", ReadyTimeout: "60s", Drain: "auto", MaxSurge: "1",
		LogFormat: "auto", LogLevel: "info", LogWorkerOutput: "false",
	}
}

// loadConfig reads a YAML file with the flags' names as keys. Unknown
// keys are errors: a typo must not pass silently.
func loadConfig(path string, into *settings) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("--config %s: %w", path, errors.Unwrap(err))
	}
	var raw any
	if err := yaml.Unmarshal(data, &raw); err != nil {
		return fmt.Errorf("--config %s: not valid YAML: %v", path, yamlErr(err))
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(into); err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("--config %s: %v", path, yamlErr(err))
	}
	return nil
}

// yamlErr makes one line of a YAML error, in the terms of this file.
func yamlErr(err error) string {
	var te *yaml.TypeError
	if errors.As(err, &te) {
		var parts []string
		for _, e := range te.Errors {
			e = strings.TrimSpace(e)
			if where, rest, ok := strings.Cut(e, ": field "); ok {
				key, _, _ := strings.Cut(rest, " not found")
				e = where + ": unknown key " + key
			}
			parts = append(parts, e)
		}
		return strings.Join(parts, "; ")
	}
	return strings.TrimPrefix(err.Error(), "yaml: ")
}

// resolve turns settings into Options, naming the key of the first bad value.
func (s settings) resolve() (dutchmaster.Options, error) {
	var o dutchmaster.Options
	var err error
	fail := func(key, value, want string) (dutchmaster.Options, error) {
		return o, fmt.Errorf("--%s %q: %s", key, value, want)
	}
	switch s.Workers {
	case "auto":
		o.Workers = dutchmaster.AutoWorkers
	default:
		n, err := strconv.Atoi(s.Workers)
		if err != nil || n < 1 || n > 4096 {
			return fail("workers", s.Workers, "want a number from 1 to 4096, or auto")
		}
		o.Workers = func() int { return n }
	}
	o.Listen = s.Listen
	if o.RestartSignal, err = parseSignalFlag("restart-signal", s.RestartSignal); err != nil {
		return o, err
	}
	if o.StopSignal, err = parseSignalFlag("stop-signal", s.StopSignal); err != nil {
		return o, err
	}
	if o.KillTimeout, err = duration("kill-timeout", s.KillTimeout); err != nil {
		return o, err
	}
	if o.ReadyTimeout, err = duration("ready-timeout", s.ReadyTimeout); err != nil {
		return o, err
	}
	o.Ready, o.Drain = s.Ready, s.Drain
	n, err := strconv.Atoi(s.MaxSurge)
	if err != nil || n < 1 {
		return fail("max-surge", s.MaxSurge, "want a whole number, 1 or more")
	}
	o.MaxSurge = n
	o.Env, o.Dir, o.BeforeForkCommand = s.Env, s.Dir, s.BeforeFork
	if o.LogWorkerOutput, err = strconv.ParseBool(s.LogWorkerOutput); err != nil {
		return fail("log-worker-output", s.LogWorkerOutput, "want true or false")
	}
	o.Command = s.Command
	return o, nil
}

func parseSignalFlag(key, v string) (syscall.Signal, error) {
	sig, err := fsm.ParseSignal(v)
	if err != nil {
		return 0, fmt.Errorf("--%s %q: want a signal name such as SIGUSR2", key, v)
	}
	return sig, nil
}

func duration(key, v string) (time.Duration, error) {
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("--%s %q: want a positive duration such as 30s", key, v)
	}
	return d, nil
}
