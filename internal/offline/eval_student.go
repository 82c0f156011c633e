package offline

import (
	"fmt"

	"github.com/alignet/alignet/modelfile"
)

// studentRepresentation loads a student head and returns its
// representation of the n×d embeddings x, its output dimension and its
// temperature.
func studentRepresentation(path string, x []float32, n, d int) ([]float32, int, float64, error) {
	h, _, err := modelfile.LoadStudent(path)
	if err != nil {
		return nil, 0, 0, err
	}
	if h.D != d {
		return nil, 0, 0, fmt.Errorf("student %s expects %d-d embeddings, got %d", path, h.D, d)
	}
	tau := h.Tau
	if !(tau > 0) {
		tau = 1
	}
	return h.Transform(x, n), h.P, tau, nil
}
