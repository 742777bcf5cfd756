module github.com/geomux/geomux/proto

go 1.26.0
