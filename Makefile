# alignet developer targets. `make test` is the test command (also run by CI).
.PHONY: build run test check bench kafka-up kafka-down pg-up pg-down clean

build:
	go build -o bin/alignet ./cmd/alignet

# The dev server starts its own Postgres (internal/localpg); this only makes
# sure the server binaries are installed. The binary is built first and
# exec'd, so a signal to the alignet process reaches it (go run would not
# forward SIGTERM to its child).
run:
	scripts/postgres.sh ensure-binaries >/dev/null
	go build -o bin/alignet ./cmd/alignet
	exec bin/alignet dev

test:
	scripts/test.sh

# Static checks (CI runs them before the tests).
check:
	scripts/check.sh

bench:
	go test -run '^$$' -bench . ./learner/...

kafka-up:
	scripts/kafka.sh start

kafka-down:
	scripts/kafka.sh stop

pg-up:
	scripts/postgres.sh start

pg-down:
	scripts/postgres.sh stop

clean:
	rm -rf bin
