package offline

import (
	"testing"

	"github.com/alignet/alignet/modelfile"
)

// readDataset loads the dataset file at path.
func readDataset(t testing.TB, path string) ([]int32, []float32, modelfile.Provenance, error) {
	t.Helper()
	d, err := modelfile.LoadDataset(path)
	if err != nil {
		return nil, nil, modelfile.Provenance{}, err
	}
	return d.Indices, d.Similarities, d.Provenance, nil
}
