#!/bin/sh
# Installs Fashion-MNIST from Debian's `dataset-fashion-mnist` package when it is missing.
# Never fails the build: without the data, the demo falls back to synthetic data and says so.
DIR="${1:-/usr/share/datasets/fashion-mnist}"
if [ -f "$DIR/train-images-idx3-ubyte.gz" ] || [ -f "$DIR/train-images-idx3-ubyte" ]; then
    exit 0
fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "Installing Fashion-MNIST (Debian package dataset-fashion-mnist)..."
    if apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1 ||
       { apt-get update -qq >/dev/null 2>&1 &&
         apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1; }; then
        exit 0
    fi
fi
echo "Fashion-MNIST is not installed in $DIR and could not be installed" \
     "(run 'sudo apt-get install dataset-fashion-mnist'); falling back to synthetic data." >&2
exit 0
