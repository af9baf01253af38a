package broker

import (
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"time"

	clog "github.com/chronik-dev/chronik/log"
)

// The identity file, DATA_DIR/node.json, says whose data a directory
// holds: the cluster, the node, and an incarnation drawn at random when
// the directory was first used. A wiped disk comes back with a new
// incarnation, which is how its peers tell it from the node they knew
// (README "Adding, removing and replacing nodes").
const (
	identityFile    = "node.json"
	identityVersion = 1
	// maxIdentityBytes bounds what is read of the file: it is a few
	// hundred bytes; anything much larger is not ours.
	maxIdentityBytes = 64 << 10
)

// How a data directory entered the cluster.
const (
	// modeUndecided: a fresh directory whose node is still asking its
	// peers whether the cluster exists (join.go).
	modeUndecided = ""
	// modeBootstrap: the node bootstrapped its groups with the cluster.
	modeBootstrap = "bootstrap"
	// modeJoin: the cluster existed; the node joins every group gagged
	// and is promoted by each group's leader once caught up.
	modeJoin = "join"
	// modeExisting: the directory held data from a release without
	// identity files.
	modeExisting = "existing"
)

// identity is the content of node.json.
type identity struct {
	Version     int       `json:"version"`
	ClusterID   string    `json:"cluster_id"`
	NodeID      int32     `json:"node_id"`
	Incarnation string    `json:"incarnation"` // 16 hex digits
	Created     time.Time `json:"created"`
	Mode        string    `json:"mode"`
	// MetaVoters are the metadata group's voters at its bootstrap: a node
	// that joins later starts its metadata replica from them.
	MetaVoters []int32 `json:"meta_voters,omitempty"`
	// Counted are the fresh peers (node id -> incarnation) this node
	// counted when it decided to bootstrap: such a peer, still fresh and
	// at that incarnation, bootstraps too instead of joining.
	Counted map[string]string `json:"counted,omitempty"`
	// Decided is when Mode was decided.
	Decided time.Time `json:"decided,omitzero"`
}

func (id *identity) incarnation() uint64 {
	v, _ := strconv.ParseUint(id.Incarnation, 16, 64)
	return v
}

func fmtIncarnation(v uint64) string { return fmt.Sprintf("%016x", v) }

// newIncarnation draws a random non-zero incarnation (0 means unknown on
// the wire).
func newIncarnation() uint64 {
	for {
		var b [8]byte
		rand.Read(b[:])
		if v := binary.BigEndian.Uint64(b[:]); v != 0 {
			return v
		}
	}
}

// IdentityMismatchError is returned when a data directory belongs to
// another cluster or node.
type IdentityMismatchError struct {
	Dir                            string
	FileCluster, ConfiguredCluster string
	FileNode, ConfiguredNode       int32
}

func (e *IdentityMismatchError) Error() string {
	return fmt.Sprintf("data directory %s belongs to cluster %q node %d (%s), but this node is configured as cluster %q node %d; "+
		"refusing to start (point --data-dir at this node's own directory, or move the directory away to start it empty)",
		e.Dir, e.FileCluster, e.FileNode, identityFile, e.ConfiguredCluster, e.ConfiguredNode)
}

// readIdentity reads dir's identity file; (nil, nil) when there is none.
// A file that cannot be parsed is an error naming it, never a guess.
func readIdentity(dir string) (*identity, error) {
	path := filepath.Join(dir, identityFile)
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxIdentityBytes+1))
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	if len(data) > maxIdentityBytes {
		return nil, fmt.Errorf("%s: larger than %d bytes: not a Chronik identity file", path, maxIdentityBytes)
	}
	var id identity
	if err := json.Unmarshal(data, &id); err != nil {
		return nil, fmt.Errorf("%s is damaged (%v); it names the cluster and node this directory belongs to. "+
			"Restore it, or delete it only if the directory is this node's own", path, err)
	}
	if err := id.check(); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &id, nil
}

func (id *identity) check() error {
	if id.Version != identityVersion {
		return fmt.Errorf("format version %d, this release reads %d", id.Version, identityVersion)
	}
	if id.NodeID <= 0 || id.NodeID >= 1<<16 {
		return fmt.Errorf("node id %d out of range", id.NodeID)
	}
	if v, err := strconv.ParseUint(id.Incarnation, 16, 64); err != nil || v == 0 || len(id.Incarnation) != 16 {
		return fmt.Errorf("incarnation %q is not 16 hex digits", id.Incarnation)
	}
	switch id.Mode {
	case modeUndecided, modeBootstrap, modeJoin, modeExisting:
	default:
		return fmt.Errorf("unknown mode %q", id.Mode)
	}
	return nil
}

// writeIdentity stores id in dir atomically (temporary file, fsync,
// rename, fsync of the directory; mode 0600).
func writeIdentity(dir string, id *identity) error {
	data, err := json.MarshalIndent(id, "", "  ")
	if err != nil {
		return err
	}
	return clog.WriteFileSync(filepath.Join(dir, identityFile), append(data, '\n'))
}

// hasChronikData reports whether dir holds a node's data: every release
// opens the metadata group first, so its directory is there.
func hasChronikData(dir string) bool {
	_, err := os.Stat(filepath.Join(dir, metaName))
	return err == nil
}

// loadIdentity reads, checks or creates the identity of the data
// directory for cfg. A directory of another cluster or node is refused; a
// directory with data but no file (an upgrade) is recorded as existing; a
// fresh one gets an undecided identity, decided later by asking the peers
// (join.go).
func loadIdentity(cfg *Config) (*identity, error) {
	id, err := readIdentity(cfg.DataDir)
	if err != nil {
		return nil, err
	}
	if id != nil {
		if id.ClusterID != cfg.Cluster.ClusterID || id.NodeID != cfg.NodeID {
			return nil, &IdentityMismatchError{Dir: cfg.DataDir, FileCluster: id.ClusterID, ConfiguredCluster: cfg.Cluster.ClusterID,
				FileNode: id.NodeID, ConfiguredNode: cfg.NodeID}
		}
		if id.Mode == modeUndecided && hasChronikData(cfg.DataDir) {
			// Cannot happen through this code (nothing is opened before the
			// decision is written), but a half-restored backup could.
			return nil, fmt.Errorf("%s: undecided identity, yet the directory holds data; refusing to guess", filepath.Join(cfg.DataDir, identityFile))
		}
		return id, nil
	}
	id = &identity{Version: identityVersion, ClusterID: cfg.Cluster.ClusterID, NodeID: cfg.NodeID,
		Incarnation: fmtIncarnation(newIncarnation()), Created: time.Now().UTC().Truncate(time.Second)}
	if hasChronikData(cfg.DataDir) {
		id.Mode, id.Decided = modeExisting, id.Created
		id.MetaVoters = configuredIDs(cfg.Cluster)
	} else if len(cfg.Cluster.Nodes) == 1 {
		id.Mode, id.Decided = modeBootstrap, id.Created // nobody to ask
		id.MetaVoters = configuredIDs(cfg.Cluster)
	}
	if err := writeIdentity(cfg.DataDir, id); err != nil {
		return nil, fmt.Errorf("writing %s: %w", filepath.Join(cfg.DataDir, identityFile), err)
	}
	return id, nil
}

// configuredIDs lists the node ids of cluster.toml, sorted.
func configuredIDs(cf *ClusterFile) []int32 {
	out := make([]int32, 0, len(cf.Nodes))
	for _, n := range cf.Nodes {
		out = append(out, n.ID)
	}
	slices.Sort(out)
	return out
}
