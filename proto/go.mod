module github.com/geomux/geomux/proto

go 1.27.3
