from django.contrib import admin

from syncapp.admin import SyncModelAdmin
from tests.testapp.models import Board, Card

admin.site.register(Board, SyncModelAdmin)
admin.site.register(Card, SyncModelAdmin)
