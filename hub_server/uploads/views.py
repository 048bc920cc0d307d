"""POST /api/v1/uploads/ (token with the write scope): store the archive and card, answer 202 with
`id` and `status_url`; GET /api/v1/uploads/ and /api/v1/uploads/{id}/: owner or staff."""

from __future__ import annotations

import zipfile

from django.conf import settings
from django.http import Http404
from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.exceptions import APIException
from rest_framework.parsers import FormParser, JSONParser, MultiPartParser
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response
from rest_framework.views import APIView

from hub_server import storage
from hub_server.accounts.authentication import TokenScopePermission
from hub_server.errors import api_exception_handler
from hub_server.uploads import selectors, services
from hub_server.uploads.serializers import UploadRequestSerializer, UploadSerializer


class PayloadTooLarge(APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_code = "too_large"


class UploadRefusedError(APIException):
    def __init__(self, exc: services.UploadRefused):
        self.status_code = exc.status
        detail = {exc.field: [str(exc)]} if exc.field else str(exc)
        super().__init__(detail)


class UploadViewMixin:
    renderer_classes = [JSONRenderer]
    permission_classes = [TokenScopePermission]

    def get_exception_handler(self):
        return api_exception_handler


def _zip_of_files(files) -> storage.BinaryIO:
    """The folder's files sent one by one, as the zip the checks expect (a temp file)."""
    tmp = storage.temporary_file()
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
        for f in files:
            with zf.open(f.name.replace("\\", "/").rsplit("/", 1)[-1], "w") as out:
                for chunk in f.chunks():
                    out.write(chunk)
    tmp.seek(0)
    return tmp


class UploadListView(UploadViewMixin, APIView):
    parser_classes = [MultiPartParser, FormParser, JSONParser]

    @extend_schema(responses=UploadSerializer(many=True))
    def get(self, request):
        uploads = selectors.uploads_visible_to(request.user)[:100]
        return Response(UploadSerializer(uploads, many=True, context={"request": request}).data)

    @extend_schema(request=UploadRequestSerializer, responses={202: UploadSerializer})
    def post(self, request):
        cap = settings.HUB_UPLOAD_MAX_BYTES
        declared = int(request.META.get("CONTENT_LENGTH") or 0)
        # The form's other fields are small: refuse a body far over the cap before reading it.
        if declared > cap + 1024 * 1024:
            raise PayloadTooLarge(f"the upload is larger than HUB_UPLOAD_MAX_BYTES ({cap} bytes)")
        body = UploadRequestSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        archive = data.get("archive") or _zip_of_files(data["files"])
        card = dict(data.get("card") or {})
        if data.get("description"):
            card.setdefault("description", data["description"])
        try:
            upload = services.create_upload(
                user=request.user,
                archive=archive,
                task=data["task"],
                subtask=data["subtask"],
                type=data["type"],
                org=data.get("org") or None,
                name=data.get("name") or None,
                version=data.get("version") or None,
                card=card,
                filename=getattr(data.get("archive"), "name", "") or "files.zip",
                scoped_to=getattr(request.auth, "organisation", None),
            )
        except services.UploadRefused as exc:
            raise UploadRefusedError(exc) from None
        upload.refresh_from_db()
        answer = UploadSerializer(upload, context={"request": request}).data
        return Response(
            answer, status=status.HTTP_202_ACCEPTED, headers={"Location": answer["status_url"]}
        )


class UploadDetailView(UploadViewMixin, APIView):
    @extend_schema(responses=UploadSerializer)
    def get(self, request, upload_id: int):
        upload = selectors.upload_for(request.user, upload_id)
        if upload is None:
            raise Http404("no such upload (or not yours)")
        return Response(UploadSerializer(upload, context={"request": request}).data)
