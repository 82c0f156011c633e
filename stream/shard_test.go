package stream

import (
	"fmt"
	"testing"

	"github.com/alignet/alignet"
)

func TestShardJudgmentsIsAPartition(t *testing.T) {
	t.Parallel()
	var js []alignet.Judgment
	for i := 0; i < 1000; i++ {
		js = append(js, alignet.Judgment{Study: fmt.Sprintf("s%d", i%3), ID: fmt.Sprintf("j%d", i)})
	}
	js = append(js, js[10]) // a duplicate must land in the same shard as its twin
	for _, n := range []int{1, 2, 3, 8} {
		shards := shardJudgments(js, n)
		if len(shards) > n || len(shards) == 0 {
			t.Fatalf("n=%d: %d shards", n, len(shards))
		}
		where := map[string]int{}
		total := 0
		for k, s := range shards {
			if len(s) == 0 {
				t.Fatalf("n=%d: empty shard", n)
			}
			for _, j := range s {
				key := j.Study + "/" + j.ID
				if prev, ok := where[key]; ok && prev != k {
					t.Fatalf("n=%d: %s in shards %d and %d", n, key, prev, k)
				}
				where[key] = k
				total++
			}
		}
		if total != len(js) {
			t.Fatalf("n=%d: shards hold %d of %d judgments", n, total, len(js))
		}
		if n > 1 && len(shards) < 2 {
			t.Fatalf("n=%d: 1001 judgments were not split", n)
		}
	}
}
