// Package schemas holds the Avro schemas of the records beacon reads and
// writes.
package schemas

import "embed"

// FS holds every *.avsc file of this directory.
//
//go:embed *.avsc
var FS embed.FS
