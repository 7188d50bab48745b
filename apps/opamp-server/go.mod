module github.com/ryanfaircloth/ollyscale/apps/opamp-server

go 1.25
