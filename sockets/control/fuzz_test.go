package control

import (
	"encoding/json"
	"reflect"
	"slices"
	"strings"
	"testing"
)

// FuzzParseRequest: any request line is decoded or refused without a
// panic; a field the protocol does not know is refused; and a decoded
// request, encoded again, decodes to itself.
func FuzzParseRequest(f *testing.F) {
	for _, seed := range []string{
		`{"command":"status"}`, `{"command":"restart"}` + "\n", `{"command":"stop"}`,
		`{"command":"scale","workers":3}`, `{"command":"scale","workers":-1}`,
		`{"command":"scale","workers":1e3}`, `{"command":"status","extra":1}`,
		`{"Command":"STATUS"}`, `{"command":"status"} trailing`, `{"command":`, `null`, `[]`, ``,
		`{"command":"status","command":"stop"}`, "\xff",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, line []byte) {
		req, err := ParseRequest(line)
		if err != nil {
			if req != (Request{}) {
				t.Fatalf("%q: error %v with a request %+v", line, err, req)
			}
			return
		}
		// Every key of the object must name a field of Request
		// (encoding/json matches names without regard to case).
		var fields map[string]json.RawMessage
		if json.Unmarshal(line, &fields) == nil {
			for k := range fields {
				if !slices.ContainsFunc(requestFields(), func(name string) bool { return strings.EqualFold(name, k) }) {
					t.Fatalf("%q: unknown field %q accepted", line, k)
				}
			}
		}
		b, err := json.Marshal(req)
		if err != nil {
			t.Fatalf("%+v: %v", req, err)
		}
		back, err := ParseRequest(b)
		if err != nil || back != req {
			t.Fatalf("%q: %+v encodes to %s, which decodes to %+v, %v", line, req, b, back, err)
		}
	})
}

// requestFields are the JSON names of Request's fields.
func requestFields() []string {
	rt := reflect.TypeFor[Request]()
	var names []string
	for i := range rt.NumField() {
		name, _, _ := strings.Cut(rt.Field(i).Tag.Get("json"), ",")
		names = append(names, name)
	}
	return names
}
