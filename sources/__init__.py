"""Where the data comes from: what the fetch stage turns into data/raw's four idx files.

catalog.py   the named datasets: their files, content pins, mirrors and class names
named.py     a named dataset, its sources tried in turn and checked against the pins
origins.py   those sources: an HTTPS mirror, a local folder, the package index, scikit-learn
download.py  HTTP with a deadline per request, a size cap and retries
idx.py       fetch.dataset idx: any four idx files, from a folder or a URL
folder.py    fetch.dataset folder: your own images, one sub-folder per class
images.py    reading a person's image file, whatever its format (predict reads them alike)
"""
