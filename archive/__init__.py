"""The archive: where ended runs go once Redis no longer needs to hold them (DESIGN §7).

A run that ended is compacted into a file set in the workspace's object store
(:mod:`.store`): a local folder beside the artifacts by default, any S3-compatible
store when ``RUNSTREAM_ARCHIVE_URL`` names one.  The file set (:mod:`.fileset`) holds
what the run's Redis record held (:mod:`.snapshot`), its numeric series compressed;
:mod:`.archiver` writes and verifies it before the record's keys give way to a stub,
and :mod:`.archived` reads it back in the record's own shapes, so every reader
(:class:`runstream.consumer.reader.RecordReader`) answers for an archived run as for
a live one.
"""
