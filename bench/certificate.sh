# Sourced by the HTTPS benchmarks: `make_certificate DIR NAME` makes a
# throwaway authority (DIR/ca.pem) and a certificate for localhost signed by
# it (DIR/server.pem, key DIR/server.key), valid for a day.
make_certificate() {
    local dir=$1 name=$2
    local key=(-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes)
    openssl req -x509 "${key[@]}" -keyout "$dir/ca.key" -out "$dir/ca.pem" -days 1 -subj "/CN=$name CA" 2>/dev/null
    openssl req "${key[@]}" -keyout "$dir/server.key" -out "$dir/server.csr" -subj /CN=localhost 2>/dev/null
    printf "subjectAltName=DNS:localhost\nextendedKeyUsage=serverAuth\n" >"$dir/server.ext"
    openssl x509 -req -in "$dir/server.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" -CAcreateserial \
        -out "$dir/server.pem" -days 1 -extfile "$dir/server.ext" 2>/dev/null
}
