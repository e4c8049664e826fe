package kafkatest

import "testing"

// TestClusterIDNeverStartsWithDash: kafka-storage format reads an ID that
// starts with '-' as an option and fails; one random ID in 64 would.
func TestClusterIDNeverStartsWithDash(t *testing.T) {
	for range 2000 {
		id, err := clusterID()
		if err != nil {
			t.Fatal(err)
		}
		if id[0] == '-' || len(id) != 22 {
			t.Fatalf("cluster ID %q: want 22 characters, not starting with '-'", id)
		}
	}
}
