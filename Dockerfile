# Multi-stage build of the alignet binary.
#   docker build -t alignet .
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o /out/alignet ./cmd/alignet

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/alignet /usr/local/bin/alignet
USER nonroot:nonroot
# 8080: the API (ALIGNET_LISTEN); 9100: /metrics of docker-compose.yml's services.
EXPOSE 8080 9100
ENTRYPOINT ["/usr/local/bin/alignet"]
CMD ["serve"]
