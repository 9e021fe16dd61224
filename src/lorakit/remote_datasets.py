"""Kaggle's dataset and model endpoints lorakit uses (the private dataset that carries a predict-only push's
adapter, the sources a push names), on the transport of :mod:`lorakit.transport`; a part of
:class:`lorakit.remote.Remote`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from lorakit.errors import RemoteError
from lorakit.transport import Transport, enum_name


def upload_put(url: str, path: Path) -> None:
    """PUT the file to its upload URL, as kaggle's upload_complete does without a resume.

    Not upload_complete itself: it retries a stalled PUT ten times inside one call, beyond any budget.
    """
    import requests

    with open(path, "rb") as handle:
        response = requests.put(url, data=handle)  # the timeout comes from bounded()
    response.raise_for_status()


class DatasetCalls(Transport):
    """Kaggle's dataset and model endpoints, each a method named resource_verb."""

    def _dataset_get(self, ref):
        """GetDataset; None on 404."""
        from kagglesdk.datasets.types.dataset_api_service import ApiGetDatasetRequest

        request = ApiGetDatasetRequest()
        request.owner_slug = ref.owner
        request.dataset_slug = ref.slug
        return self._none_on_404(lambda kaggle: kaggle.datasets.dataset_api_client.get_dataset(request))

    def dataset_description_get(self, ref) -> Optional[str]:
        """The description of dataset ``ref``; None when there is no such dataset."""
        dataset = self.call(f"read the dataset {ref}", lambda: self._dataset_get(ref))
        return None if dataset is None else (dataset.description or "")

    def dataset_versions_get(self, ref) -> Optional[int]:
        """The newest version number of dataset ``ref``; None when there is no such dataset (a source looked up)."""
        dataset = self.call(f"look up the dataset {ref}", lambda: self._dataset_get(ref))
        return None if dataset is None else int(getattr(dataset, "current_version_number", 0) or 0)

    def model_instance_versions_get(self, owner: str, model: str, framework: str, instance: str) -> Optional[int]:
        """The newest version number of a model instance (GetModelInstance); None when there is none."""
        from kagglesdk.models.types.model_api_service import ApiGetModelInstanceRequest
        from kagglesdk.models.types.model_enums import ModelFramework

        request = ApiGetModelInstanceRequest()
        request.owner_slug, request.model_slug, request.instance_slug = owner, model, instance
        try:
            request.framework = self.api.lookup_enum(ModelFramework, ModelFramework.MODEL_FRAMEWORK_API, framework)
        except KeyError:
            return None  # no framework of that name: no such instance
        found = self.call(f"look up the model {owner}/{model}/{framework}/{instance}", lambda: self._none_on_404(
            lambda kaggle: kaggle.models.model_api_client.get_model_instance(request)))
        return None if found is None else int(getattr(found, "version_number", 0) or 0)

    def dataset_status_get(self, ref) -> str:
        """Kaggle's processing status of dataset ``ref``'s newest version (READY once it can be attached)."""
        from kagglesdk.datasets.types.dataset_api_service import ApiGetDatasetStatusRequest

        def get():
            request = ApiGetDatasetStatusRequest()
            request.owner_slug = ref.owner
            request.dataset_slug = ref.slug
            with self.client() as kaggle:
                return kaggle.datasets.dataset_api_client.get_dataset_status(request)

        return enum_name(self.call(f"read the status of the dataset {ref}", get).status)

    def _blob_upload(self, path: Path) -> str:
        """Upload one file as a dataset blob (StartBlobUpload, then a PUT, both safe to repeat); its token."""
        from kagglesdk.blobs.types.blob_api_service import ApiBlobType, ApiStartBlobUploadRequest

        def start():
            request = ApiStartBlobUploadRequest()
            request.type = ApiBlobType.DATASET
            request.name = path.name
            request.content_length = path.stat().st_size
            request.last_modified_epoch_seconds = int(path.stat().st_mtime)
            with self.client() as kaggle:
                return kaggle.blobs.blob_api_client.start_blob_upload(request)

        upload = self.call(f"start the upload of {path.name}", start)
        self.call(f"upload {path.name}", lambda: upload_put(upload.create_url, path))
        return upload.token

    def _blobs_upload(self, folder: Path) -> tuple[list, list]:
        """Upload a folder's files, subfolders kept as directories: (files, directories) of a dataset request.

        Hidden files are left out, as adapter_digest leaves them out.
        """
        from kagglesdk.datasets.types.dataset_api_service import ApiDatasetNewFile, ApiUploadDirectoryInfo

        files, directories = [], []
        for path in sorted(folder.iterdir()):
            if path.name.startswith("."):
                continue
            if path.is_dir():
                directory = ApiUploadDirectoryInfo()
                directory.name = path.name
                directory.files, directory.directories = self._blobs_upload(path)
                directories.append(directory)
            elif path.is_file():
                new_file = ApiDatasetNewFile()
                new_file.token = self._blob_upload(path)
                files.append(new_file)
        return files, directories

    def dataset_publish(self, ref, folder: Path, title: str, description: str, exists: bool) -> bool:
        """Upload ``folder`` as a new private dataset ``ref``, or as a new version of it when it ``exists``.

        ``description`` must say which files these are (it carries their digest): it tells a lost reply that
        went through from one that did not (call_confirmed), so neither is ever created twice. Returns
        whether a lost reply was recovered.
        """
        from kagglesdk.datasets.types.dataset_api_service import (
            ApiCreateDatasetRequest,
            ApiCreateDatasetResponse,
            ApiCreateDatasetVersionRequest,
            ApiCreateDatasetVersionRequestBody,
        )

        files, directories = self._blobs_upload(folder)

        def send():
            with self.client() as kaggle:
                datasets = kaggle.datasets.dataset_api_client
                if exists:
                    body = ApiCreateDatasetVersionRequestBody()
                    body.version_notes = description
                    body.description = description
                    body.files, body.directories = files, directories
                    request = ApiCreateDatasetVersionRequest()
                    request.owner_slug, request.dataset_slug, request.body = ref.owner, ref.slug, body
                    return datasets.create_dataset_version(request)
                request = ApiCreateDatasetRequest()
                request.owner_slug, request.slug, request.title = ref.owner, ref.slug, title
                request.license_name = "CC0-1.0"
                request.is_private = True
                request.description = description
                request.files, request.directories = files, directories
                return datasets.create_dataset(request)

        def went_through():
            dataset = self._dataset_get(ref)
            return ApiCreateDatasetResponse() if dataset is not None and dataset.description == description else None

        response, recovered = self.call_confirmed(
            f"upload the adapter dataset {ref}",
            send,
            went_through,
            forbidden=f"check that the username in {ref} is yours",
        )
        error = (getattr(response, "error", "") or "").strip()
        if error:
            raise RemoteError(f"Kaggle refused the adapter dataset {ref}: {error}")
        return recovered
