//go:build unix

package mde

import (
	"os"
	"syscall"
)

// mapFile maps f's first size bytes read-only. The caller unmaps them
// with unmapFile once nothing aliases them.
func mapFile(f *os.File, size int64) ([]byte, error) {
	data, err := syscall.Mmap(int(f.Fd()), 0, int(size), syscall.PROT_READ, syscall.MAP_SHARED)
	if err != nil {
		return nil, err
	}
	_ = syscall.Madvise(data, syscall.MADV_SEQUENTIAL) // a hint: read-ahead, pages dropped behind
	return data, nil
}

func unmapFile(data []byte) { _ = syscall.Munmap(data) }

// releasePages drops a page-aligned range of a mapping from the process
// (MADV_DONTNEED: the file's pages stay in the page cache, and reading
// the range again would fault them back in).
func releasePages(b []byte) { _ = syscall.Madvise(b, syscall.MADV_DONTNEED) }
