package log

import (
	"os"
	"path/filepath"
)

// Data files are for the broker's user only (issue 12: other local users
// could read every partition): files 0600, directories 0700.
const (
	filePerm = 0o600
	dirPerm  = 0o700
)

// writeFileSync writes path through a temporary file, fsyncs it, renames it
// into place and fsyncs the directory.
func writeFileSync(path string, data []byte) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, filePerm)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	return syncDir(filepath.Dir(path))
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// WriteFileSync is writeFileSync for other packages keeping small state
// files (broker markers, raft state and snapshots): when it returns nil the
// data and its name are on disk.
func WriteFileSync(path string, data []byte) error { return writeFileSync(path, data) }

// SyncDir fsyncs dir, making renames and creations in it durable.
func SyncDir(dir string) error { return syncDir(dir) }
